"""What a run leaves on disk (issue 29, item 4) and the sizes the tab proposes on a CPU (item 8).

A finished training job keeps no resume state unless ``keep_state`` asks (a cancelled one keeps it: see
test_resume.py); the Test step's copies in the WebUI's Lora folder are reused and deleted with the project;
``Service.disk_usage``/``cleanup`` and their routes; ``config.device_defaults`` and the tab's initial values.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from conftest import needs_diffusers, world_photos
from webui_double.fixture import webui_double  # noqa: F401 - the fixture

from lora_trainer.errors import UserError




def _trained_project(tmp_path):
    from lora_trainer.service import Service, StandaloneModels

    svc = Service(tmp_path / "ws", StandaloneModels(device="cpu"))
    svc.create_project("p", trigger="zkw", repeats=2)
    svc.add_images("p", world_photos(tmp_path / "upload", 3, stem="img"))
    for j in (svc.preprocess("p", {"crop": "center", "size": 64, "background": "none"}),
              svc.autotag("p", {"tagger": "toy", "trigger": "zkw"})):
        assert svc.runner.wait(j, 600)["status"] == "finished"
    return svc


TRAIN = {"max_steps": 2, "optimizer": "AdamW", "save_fractions": [0.5]}


# --------------------------------------------------------------------------------------------- resume state

@needs_diffusers  # the toy model
def test_a_finished_service_run_leaves_no_resume_state_unless_the_config_keeps_it(tmp_path):
    svc = _trained_project(tmp_path)
    try:
        done = svc.train("p", TRAIN)
        st = svc.runner.wait(done, 600)
        assert st["status"] == "finished", st
        job_dir = svc.runner.job_dir(done)
        assert (job_dir / "log.jsonl").is_file()
        assert not (job_dir / "state").exists(), sorted(p.name for p in (job_dir / "state").iterdir())
        assert svc.disk_usage("p")["bytes"]["state"] == 0
        kept = svc.train("p", {**TRAIN, "keep_state": True})
        assert svc.runner.wait(kept, 600)["status"] == "finished"
        assert (svc.runner.job_dir(kept) / "state" / "latest.json").is_file()
        assert svc.disk_usage("p")["bytes"]["state"] > 0
        # the tab's and the API's cleanup frees it; the LoRA files stay
        res = svc.cleanup("p")
        assert res["freed"]["state"] > 0 and res["usage"]["bytes"]["state"] == 0
        assert not (svc.runner.job_dir(kept) / "state").exists()
        assert {o["name"] for o in svc.outputs("p")} == {"zkw.safetensors", "zkw-step000001.safetensors"}
    finally:
        svc.runner.shutdown()


@needs_diffusers  # the toy model
def test_a_finished_cli_run_leaves_no_resume_state_unless_asked(tmp_path, capsys):
    from lora_trainer.cli import main
    from lora_trainer.training.tiny import tiny_dataset

    tiny_dataset(tmp_path / "data", n=2, repeats=1, name="amy")
    base = ["train", "--data", str(tmp_path / "data"), "--max-steps", "2", "--optimizer", "AdamW",
            "--save-fractions", "0.5", "--no-forecast"]
    assert main(base + ["--output-dir", str(tmp_path / "plain")]) == 0
    assert main(base + ["--output-dir", str(tmp_path / "kept"), "--keep-state"]) == 0
    capsys.readouterr()
    assert (tmp_path / "plain" / "amy.safetensors").is_file()
    assert list((tmp_path / "plain" / "jobs").glob("*/log.jsonl")) and \
        not list((tmp_path / "plain" / "jobs").glob("*/state"))
    assert list((tmp_path / "kept" / "jobs").glob("*/state/latest.json"))


def test_a_cancelled_run_keeps_its_state_to_resume_a_finished_one_only_when_asked(tmp_path):
    """On the real ldm model (both CI profiles): the Trainer itself drops the state, for the CLI and the Service."""
    from ldm_models import tiny_latent_diffusion

    from lora_trainer.config import toy_config
    from lora_trainer.training import data as D
    from lora_trainer.training.ldm_backend import LdmBackend
    from lora_trainer.training.loop import Callbacks, Trainer
    from lora_trainer.training.tiny import tiny_dataset

    tiny_dataset(tmp_path / "data", n=2, repeats=2, name="r")
    be = LdmBackend(tiny_latent_diffusion(seed=0))
    scan = D.scan_dataset(tmp_path / "data", 1)
    cfg = toy_config(optimizer="AdamW", unet_lr=1e-3, batch_size=1, epochs=1, save_fractions=[0.5], sync_every=1)
    steps: list = []
    part = Trainer(be, scan, cfg, tmp_path / "out", Callbacks(on_log=lambda r: steps.append(r["step"])),
                   should_stop=lambda: len(steps) >= 3, job_dir=tmp_path / "job", name="r").run()
    assert part.cancelled and (tmp_path / "job" / "state" / "latest.json").is_file()
    done = Trainer(be, scan, cfg, tmp_path / "out", job_dir=tmp_path / "job", name="r", resume=True).run()
    assert not done.cancelled and done.steps == done.total_steps == 4  # 2 images x 2 repeats
    assert not (tmp_path / "job" / "state").exists()  # finished after the resume: nothing left to resume
    kept = dataclasses.replace(cfg, keep_state=True)
    Trainer(be, scan, kept, tmp_path / "out3", job_dir=tmp_path / "kept", name="r").run()
    assert (tmp_path / "kept" / "state" / "latest.json").is_file()


# --------------------------------------------------------------------------------------------- usage, cleanup

def _write(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)
    return path


def _filled_project(tmp_path):
    """A project with files of known sizes in every category (no model work), and one link out."""
    from lora_trainer.service import Service

    svc = Service(tmp_path / "ws")
    svc.create_project("p", trigger="zkw", repeats=2)
    root = svc.project("p").root
    _write(root / "source" / "a.jpg", 1000)
    _write(root / "dataset" / "2_zkw" / "a.png", 200)
    _write(root / "dataset" / "2_zkw" / "a.txt", 20)
    _write(root / "output" / "zkw.safetensors", 5000)
    _write(root / "output" / "zkw.json", 50)
    _write(root / "output" / "zkw-step000002.safetensors", 4000)
    _write(root / "output" / "zkw-000001.safetensors", 3000)
    _write(root / "output" / "v-202612.safetensors", 10)  # a final file named with digits: it has a sidecar
    _write(root / "output" / "v-202612.json", 5)
    job = root / "jobs" / "20261205-train-1"
    _write(job / "state" / "step000002.safetensors", 9000)
    _write(job / "latents" / "a.safetensors", 700)
    _write(job / "log.jsonl", 30)
    _write(root / "cache" / "thumbs" / "a.jpg", 60)
    outside = _write(tmp_path / "elsewhere" / "big.bin", 100_000)
    os.symlink(outside, job / "state" / "link.bin")  # counted as a link, never followed, never deleted through
    return svc, root, job, outside


def test_disk_usage_counts_every_category_without_following_links(tmp_path):
    svc, root, job, outside = _filled_project(tmp_path)
    use = svc.disk_usage("p")
    b = use["bytes"]
    link = os.lstat(job / "state" / "link.bin").st_size
    assert b["source"] == 1000 and b["dataset"] == 220 and b["outputs"] == 5065
    assert b["intermediate"] == 7000 and b["state"] == 9000 + link and b["caches"] == 760
    assert b["jobs"] == 30 and b["host_copies"] == 0
    assert use["total"] == sum(b.values()) and set(use["help"]) == set(b)
    with pytest.raises(UserError, match="no project"):
        svc.disk_usage("nope")


def test_cleanup_deletes_what_it_is_asked_and_never_final_files_or_photos_unnamed(tmp_path):
    svc, root, job, outside = _filled_project(tmp_path)
    res = svc.cleanup("p")  # the default: resume state, caches, test copies
    assert set(res["freed"]) == {"state", "caches", "host_copies"} and res["freed"]["caches"] == 760
    assert not (job / "state").exists() and not (job / "latents").exists() and not (root / "cache").exists()
    assert outside.is_file() and outside.stat().st_size == 100_000  # the link went, not its target
    assert (job / "log.jsonl").is_file() and (root / "output" / "zkw.safetensors").is_file()
    assert (root / "output" / "zkw-000001.safetensors").is_file() and (root / "source" / "a.jpg").is_file()
    res = svc.cleanup("p", ["intermediate"])
    assert res["freed"] == {"intermediate": 7000}
    assert sorted(p.name for p in (root / "output").iterdir()) == ["v-202612.json", "v-202612.safetensors",
                                                                    "zkw.json", "zkw.safetensors"]
    for bad in (["everything"], ["jobs"], []):
        with pytest.raises(UserError):
            svc.cleanup("p", bad)
    assert svc.cleanup("p", ["outputs", "source"])["freed"] == {"outputs": 5065, "source": 1000}
    assert not any((root / "output").iterdir()) and not any((root / "source").iterdir())


def test_cleanup_keeps_the_state_of_a_queued_or_running_job(tmp_path):
    import threading

    svc, root, job, _ = _filled_project(tmp_path)
    hold = threading.Event()
    busy = svc.runner.submit("train", lambda ctx: {"held": hold.wait(30)}, config={"project": "p"},
                             parent=svc.project("p").jobs)
    busy_state = _write(svc.runner.job_dir(busy) / "state" / "latest.json", 10)
    try:
        svc.cleanup("p", ["state"])
        assert busy_state.is_file() and not (job / "state").exists()
        with pytest.raises(UserError, match="queued or running"):
            svc.cleanup("p", ["intermediate"])
    finally:
        hold.set()
        svc.runner.wait(busy, 30)
        svc.runner.shutdown()


def test_disk_and_cleanup_routes(tmp_path):
    httpx = pytest.importorskip("httpx")
    from lora_trainer.api import PREFIX, create_app
    from lora_trainer.api.serve import BackgroundServer

    svc, root, job, _ = _filled_project(tmp_path)
    with BackgroundServer(create_app(svc)) as srv:
        c = httpx.Client(base_url=srv.url + PREFIX, timeout=60)
        r = c.get("/projects/p/disk")
        assert r.status_code == 200 and r.json()["bytes"]["intermediate"] == 7000, r.text
        assert c.get("/projects/nope/disk").status_code == 404
        r = c.post("/projects/p/cleanup", json={"what": ["intermediate"]})
        assert r.status_code == 200 and r.json()["freed"] == {"intermediate": 7000}, r.text
        assert r.json()["usage"]["bytes"]["intermediate"] == 0
        assert c.post("/projects/p/cleanup", json={"what": ["jobs"]}).status_code == 422
        assert c.post("/projects/p/cleanup", json={"what": ["state"], "extra": 1}).status_code == 422
        assert c.post("/projects/p/cleanup", json={"what": []}).status_code == 400
        r = c.post("/projects/p/cleanup")  # no body: the default categories
        assert r.status_code == 200 and set(r.json()["freed"]) == {"state", "caches", "host_copies"}, r.text
        assert (root / "output" / "zkw.safetensors").is_file() and (root / "source" / "a.jpg").is_file()
        c.close()


# --------------------------------------------------------------------------------------------- host copies

def test_test_copies_reuse_the_published_file_and_go_with_the_project(webui_double, tmp_path):
    from test_host_adapter import random_lora_file

    from lora_trainer.host import webui
    from lora_trainer.host.generate import TEST_SUBDIR

    d = webui_double
    service = webui.get_service()
    assert service.device_kind() == "cpu"  # the WebUI's devices.device: the Train and Test steps propose for it
    service.create_project("amy")
    out = service.project("amy").output
    final, inter = out / "amy.safetensors", out / "amy-step000002.safetensors"
    random_lora_file(d, final, "amy", scale=0.1)
    random_lora_file(d, inter, "amy", scale=0.2)
    published = webui.publish(final, "amy", always=True)
    tests = d.lora_dir / TEST_SUBDIR
    gen = webui.HostGenerator(sampler_name="Euler")
    gen.generate(["a cat"], seeds=[1], steps=2, size=32, lora=str(final))
    # the published copy holds the same weights: used as it is, no second copy
    assert d.m("processing").calls[-1]["prompt"] == "a cat <lora:amy:1>"
    assert not tests.exists() or not list(tests.iterdir())
    gen.generate(["a cat"], seeds=[1], steps=2, size=32, lora=str(inter))
    gen.generate(["a cat"], seeds=[2], steps=2, size=32, lora=str(inter), weight=0.5)
    copies = list(tests.glob("*.safetensors"))
    assert len(copies) == 1 and copies[0].stem.startswith("amy-step000002-")  # the same file: one copy
    use = service.disk_usage("amy")["bytes"]
    assert use["host_copies"] == copies[0].stat().st_size
    # another project's file of the same name but other weights is not this project's copy
    service.create_project("bob")
    bob = service.project("bob").output / "amy-step000002.safetensors"
    random_lora_file(d, bob, "amy", scale=0.3)
    assert service.disk_usage("bob")["bytes"]["host_copies"] == 0
    # an intermediate save that is cleaned up takes its test copy with it
    res = service.cleanup("amy", ["intermediate"])
    assert res["freed"]["host_copies"] == use["host_copies"] and not copies[0].exists() and not inter.exists()
    random_lora_file(d, inter, "amy", scale=0.4)
    gen.generate(["a cat"], seeds=[1], steps=2, size=32, lora=str(inter))
    copies = list(tests.glob("*.safetensors"))
    assert len(copies) == 1
    service.delete_project("amy")
    assert not copies[0].exists()
    assert published.is_file()  # what the user published stays in the WebUI


# --------------------------------------------------------------------------------------------- CPU proposals

def test_device_defaults_shrink_a_full_size_model_on_a_cpu_only():
    from lora_trainer.config import TOY_PRESET, TrainConfig, device_defaults, from_dict

    gpu = device_defaults(None, "cuda")
    assert gpu == {"train": {}, "test": {"size": 512, "steps": 20, "seeds": [1, 2]}}
    assert device_defaults(None, "cuda:1") == gpu
    cpu = device_defaults(None, "cpu")
    assert cpu["train"] == {"rank": 32, "alpha": 16.0, "resolution": 384}  # alpha/rank kept at the recipe's 1/2
    assert cpu["test"] == {"size": 384, "steps": 12, "seeds": [1]}
    from_dict(TrainConfig, cpu["train"])  # a valid config
    assert device_defaults({"resolution": 768, "train_text_encoder": False}, "cpu")["train"]["resolution"] == 576
    assert device_defaults({"rank": 16, "alpha": 16.0}, "cpu")["train"]["rank"] == 16  # never raised
    toy = device_defaults(TOY_PRESET, "cpu")  # already sized for a CPU
    assert toy == {"train": {}, "test": {"size": 64, "steps": 20, "seeds": [1, 2]}}


def _tab(tmp_path, device: str):
    from lora_trainer.service import Service, StandaloneModels
    from lora_trainer.ui.tab import build_tab, parts_of

    # a user's model (the recipe, no preset); never loaded while the tab is built
    svc = Service(tmp_path / device, StandaloneModels(base_model=str(tmp_path / "model"), device=device))
    svc.create_project("p", trigger="zkw")
    parts = parts_of(build_tab(svc))
    return svc, parts["steps"]["train"]["controls"], parts["steps"]["test"]


def test_the_tab_proposes_cpu_sizes_and_a_project_config_wins(tmp_path):
    svc, train, test = _tab(tmp_path, "cpu")
    try:
        assert (train["rank"].value, train["alpha"].value, train["resolution"].value) == (32, 16.0, 384)
        assert (test["size"].value, test["steps"].value, test["seeds"].value) == (384, 12, "1")
        assert "first test measures the time" in test["time"].value
        from lora_trainer.ui.step_train import config_for

        svc.save_train_config("p", svc.train_config("p", {"rank": 64}))  # what a first run saves
        assert config_for(svc, "p")["rank"] == 64 and config_for(svc, "p")["resolution"] == 512
    finally:
        svc.runner.shutdown()
    svc, train, test = _tab(tmp_path, "cuda")
    try:
        assert (train["rank"].value, train["resolution"].value) == (128, 512)
        assert (test["size"].value, test["steps"].value, test["seeds"].value) == (512, 20, "1, 2")
    finally:
        svc.runner.shutdown()


def test_the_test_step_shows_the_time_from_the_last_test(tmp_path):
    import time

    from lora_trainer.service import Service, StandaloneModels
    from lora_trainer.ui.i18n import Translator
    from lora_trainer.ui.proposals import generation_rate, test_time_text

    svc = Service(tmp_path / "ws", StandaloneModels(device="cpu"))
    svc.create_project("p")
    t = Translator("en")
    try:
        assert generation_rate(svc, "p") is None
        job = svc.runner.submit("generate", lambda ctx: (time.sleep(0.5), {"images": ["a.png", "b.png"]})[1],
                                config={"project": "p", "steps": 10, "size": 100}, parent=svc.project("p").jobs)
        st = svc.runner.wait(job, 30)
        rate = generation_rate(svc, "p")
        assert rate == pytest.approx((st["finished"] - st["started"]) / (2 * 10 * 0.01))
        text = test_time_text(svc, t, "p", 4, 10, 100)  # twice the images: twice the time
        assert text.startswith("4 image(s) × 10 steps at 100 px: about") and "measured" in text
        assert "1 s" in text or "2 s" in text
    finally:
        svc.runner.shutdown()


def test_the_tab_shows_the_disk_line_and_cleans_up(tmp_path):
    from test_ui_tab import handler

    from lora_trainer.ui.tab import build_tab, parts_of

    svc, root, job, _ = _filled_project(tmp_path)
    try:
        blocks = build_tab(svc)
        disk = parts_of(blocks)["disk"]
        line = disk["line"].value
        assert line.startswith("Disk: ") and "intermediate saves 7 KB" in line and "resume state" in line
        assert disk["what"].value == ["state", "caches", "host_copies"]
        clean = handler(blocks, disk["clean"])
        line, msg = clean("p", ["state", "caches"])
        assert "resume state" not in line and "caches" not in line and msg.startswith("Freed ")
        assert not (job / "state").exists() and (root / "output" / "zkw.safetensors").is_file()
        assert clean("p", [])[-1].startswith("⚠ **nothing to clean**")
    finally:
        svc.runner.shutdown()
