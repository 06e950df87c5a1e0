"""The whole flow over real HTTP on 127.0.0.1 (uvicorn on a thread), on the embedded toy model:
create project -> upload (files and a zip) -> preprocess -> auto-tag -> edit captions -> estimate ->
train -> generate -> download, and the downloaded LoRA loads and changes the model's output."""

from __future__ import annotations

import functools
import inspect
import io
import json
import time
import zipfile

import pytest

from conftest import needs_diffusers
from lora_trainer.service import StandaloneModels

pytestmark = [needs_diffusers, pytest.mark.timeout(900)]
httpx = pytest.importorskip("httpx")


def models():
    """The standalone ModelProvider on the embedded default: the toy model (the tiny random model where its
    weights are missing), on the CPU."""
    return StandaloneModels(device="cpu")


def _png(seed: int) -> bytes:
    import numpy as np

    from lora_trainer.toy.world import render, sample_scene

    buf = io.BytesIO()
    render(sample_scene(np.random.default_rng(seed))).save(buf, format="PNG")
    return buf.getvalue()


def wait_job(client, job_id: str, timeout: float = 600.0) -> tuple[dict, list]:
    """Poll the job until it is done; (final state, every state seen while it ran)."""
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        st = r.json()
        seen.append(st)
        if st["status"] in ("finished", "failed", "cancelled", "interrupted"):
            return st, seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


@pytest.fixture()
def api(tmp_path, monkeypatch):
    from lora_trainer.api import PREFIX, create_app
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service
    from lora_trainer.training import estimate as estimate_mod
    from lora_trainer.training.plateau import PlateauRule

    # The probe's default cap is 600 steps; where the Service cannot take the probe's settings from the
    # request, cap it here so the run fits the CI budget.
    monkeypatch.setattr(estimate_mod, "PlateauRule", functools.partial(PlateauRule, window=2, smooth=1, max_steps=3))
    service = Service(tmp_path / "ws", models())
    server = BackgroundServer(create_app(service, token="tok-" + "x" * 16)).start()
    client = httpx.Client(base_url=server.url + PREFIX, headers={"Authorization": "Bearer tok-" + "x" * 16},
                          timeout=60)
    yield client, service
    client.close()
    server.stop()
    service.runner.shutdown()


def test_full_run_over_http(api, tmp_path):
    import torch
    from safetensors.torch import load_file

    client, service = api
    # 1. project
    r = client.post("/projects", json={"name": "amy", "trigger": "zkw", "repeats": 2})
    assert r.status_code == 201, r.text
    # 2. upload three images and a zip with a fourth (plus a traversal entry the importer must refuse)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("more/d.png", _png(3))
        zf.writestr("../escape.png", _png(4))
    files = [("files", (f"{c}.png", _png(i), "image/png")) for i, c in enumerate("ab")]
    files.append(("files", ("batch.zip", zbuf.getvalue(), "application/zip")))
    r = client.post("/projects/amy/images", files=files)
    assert r.status_code == 201, r.text
    rep = r.json()
    assert sorted(rep["copied"]) == ["a.png", "b.png", "more/d.png"]
    assert any("escape.png" in x["file"] for x in rep["rejected"])
    assert not (tmp_path / "ws" / "amy" / "escape.png").exists() and not (tmp_path / "ws" / "escape.png").exists()
    assert len(client.get("/projects/amy/images", params={"where": "source"}).json()["images"]) == 2  # top level
    # 3. preprocess
    r = client.post("/projects/amy/preprocess", json={"prepare": {"crop": "center", "size": 64, "background": "none"}})
    assert r.status_code == 202, r.text
    st, _ = wait_job(client, r.json()["job"])
    assert st["status"] == "finished", st
    images = client.get("/projects/amy/images").json()["images"]
    assert len(images) == 3
    # 4. auto-tag with the toy tagger
    r = client.post("/projects/amy/tag", json={"tagger": "toy", "trigger": "zkw"})
    st, _ = wait_job(client, r.json()["job"])
    assert st["status"] == "finished", st
    caps = client.get("/projects/amy/captions").json()
    assert len(caps["images"]) == 3 and all(c["tags"][0] == "zkw" for c in caps["images"])
    # 5. edit: one caption by hand, then a bulk add on every image
    first = caps["images"][0]["image"]
    r = client.patch("/projects/amy/captions", json={"captions": {first: ["zkw", "red", "circle"]}})
    assert r.status_code == 200 and r.json()["changed"] == 1, r.text
    r = client.post("/projects/amy/captions/bulk", json={"action": "add", "tags": ["api test"], "keep_tokens": 1})
    assert r.json() == {"changed": 3, "selected": 3, "written": 3}
    dataset = service.dataset_dir("amy")
    on_disk = (dataset / first).with_suffix(".txt").read_text(encoding="utf-8")
    assert on_disk == "zkw, red, circle, api test"
    # 6. estimate (probe capped at a few steps)
    probe = {"probe_max_steps": 3, "plateau_window": 2, "range_steps": 4, "probe_resolution": 32} \
        if "probe" in inspect.signature(service.estimate).parameters else {}
    small = {"batch_size": 1, "resolution": 32}  # a few CPU steps on small latents: seconds, not minutes
    r = client.post("/projects/amy/estimate", json={**small, **probe})
    assert r.status_code == 202, r.text
    st, _ = wait_job(client, r.json()["job"])
    assert st["status"] == "finished", st
    est = st["result"]
    assert est["unet_lr"] > 0 and est["steps"] <= 3 and est["proposed"]["unet_lr"] == est["unet_lr"]
    assert est["limited_by"] in ("plateau", "range test") and est["unet_lr"] <= est["plateau_lr"] * 1.01
    # 7. train a few steps at the estimated lr's neighbourhood (fast and visible)
    # keep_state: step 11 plays a process that died after this run; a finished run otherwise deletes its state
    r = client.post("/projects/amy/train", json={"max_steps": 2, "optimizer": "AdamW", "unet_lr": 1e-2,
                                                 "save_fractions": [0.5], "keep_state": True, **small})
    job = r.json()["job"]
    st, seen = wait_job(client, job)
    assert st["status"] == "finished", st
    assert st["percent"] == pytest.approx(100.0) and st["eta"] == 0.0 and st["project"] == "amy"
    assert st["result"]["steps"] == 2
    log = client.get(f"/jobs/{job}/log", params={"tail": 2}).json()
    assert log["total"] == 2 and [rec["step"] for rec in log["records"]] == [1, 2]
    assert all(isinstance(rec["loss"], float) for rec in log["records"])
    assert job in [j["id"] for j in client.get("/jobs", params={"project": "amy"}).json()]
    # 8. outputs and download
    outs = {o["name"]: o for o in client.get("/projects/amy/outputs").json()["files"]}
    assert "zkw.safetensors" in outs and "zkw-step000001.safetensors" in outs
    r = client.get(outs["zkw.safetensors"]["url"].replace("/lora-trainer/v1", ""))
    assert r.status_code == 200 and len(r.content) == outs["zkw.safetensors"]["bytes"]
    downloaded = tmp_path / "downloaded.safetensors"
    downloaded.write_bytes(r.content)
    tensors = load_file(str(downloaded))
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_up.weight") for k in tensors)
    # "Use in the WebUI" needs the WebUI's Lora folder: standalone it says where the file is instead
    r = client.post("/projects/amy/outputs/zkw.safetensors/publish")
    assert r.status_code == 409 and "no WebUI Lora folder" in r.json()["error"], r.text
    assert str(service.project("amy").output / "zkw.safetensors") in r.json()["hint"]
    assert client.post("/projects/amy/outputs/nothing.safetensors/publish").status_code == 404
    # 9. generate with and without the LoRA (<lora:NAME:W> in the prompt picks the output file)
    r = client.post("/projects/amy/generate", json={"prompts": ["zkw, red circle <lora:zkw:1>"], "seeds": [5],
                                                    "steps": 2, "size": 32})
    with_lora, _ = wait_job(client, r.json()["job"])
    assert with_lora["status"] == "finished" and with_lora["config"]["lora"] == "zkw.safetensors", with_lora
    samplers = client.get("/samplers").json()
    assert samplers[0] == "Euler" and "Euler a" in samplers
    r = client.post("/projects/amy/generate", json={"prompts": ["zkw, red circle"], "seeds": [5], "steps": 2,
                                                    "size": 32, "sampler": "Euler a"})
    assert r.status_code == 202, r.text
    bad = client.post("/projects/amy/generate", json={"prompts": ["x"], "sampler": "k_lms"})
    assert bad.status_code == 400 and "unknown sampler" in bad.json()["error"] and "Euler a" in bad.json()["hint"]
    without, _ = wait_job(client, r.json()["job"])
    assert without["config"]["sampler"] == "Euler a"
    pngs = []
    for st in (with_lora, without):
        files = client.get(f"/jobs/{st['id']}/files").json()["files"]
        assert [f["name"] for f in files if f["name"].endswith(".png")] == ["image-000.png"]
        img = client.get(f"/jobs/{st['id']}/files/image-000.png")
        assert img.status_code == 200 and img.headers["content-type"] == "image/png"
        pngs.append(img.content)
    assert pngs[0] != pngs[1]
    # 10. the downloaded file loads into the model and changes its output
    from lora_trainer.generate import DiffusersGenerator
    from lora_trainer.models import load_backend

    be, _ = load_backend(None, torch.device("cpu"))   # a fresh copy of the model the service trained
    net = DiffusersGenerator(be).network_for(downloaded, 1.0)
    assert len(net.loras) == len({k.split(".", 1)[0] for k in tensors})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=g)
    t = torch.tensor([500])
    prompt = ["zkw, red circle"]
    with torch.no_grad():
        base = be.denoise(x, t, be.encode_text(prompt))
        net.attach()
        try:
            lora_out = be.denoise(x, t, be.encode_text(prompt))
        finally:
            net.detach()
        again = be.denoise(x, t, be.encode_text(prompt))
    assert torch.equal(base, again)
    assert (lora_out - base).abs().max().item() > 1e-5
    # 11. a restart: the training job that was running comes back interrupted, and resumes from its state
    state_file = service.runner.job_dir(job) / "state.json"
    saved = json.loads(state_file.read_text(encoding="utf-8"))
    state_file.write_text(json.dumps({**saved, "status": "running"}), encoding="utf-8")  # as if the process died
    from lora_trainer.api import create_app
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service

    restarted = Service(service.workspace, models())
    try:
        with BackgroundServer(create_app(restarted)) as srv:
            c2 = httpx.Client(base_url=srv.url + "/lora-trainer/v1", timeout=60)
            st = c2.get(f"/jobs/{job}").json()
            assert st["status"] == "interrupted" and st["resumable"] is True, st
            r = c2.post(f"/jobs/{job}/resume")
            assert r.status_code == 202 and r.json()["job"] == job, r.text
            st, _ = wait_job(c2, job)
            assert st["status"] == "finished" and st["result"]["steps"] == 2, st
            steps = [rec["step"] for rec in c2.get(f"/jobs/{job}/log").json()["records"]]
            assert steps == [1, 2, 2]  # it went on from the state saved at step 1, not from the start
            assert c2.post(f"/jobs/{job}/resume").status_code == 409  # finished: nothing to resume
            info = c2.get("/projects/amy").json()
            assert info["dataset_images"] == 3 and "zkw.safetensors" in info["outputs"]
            assert {j["id"] for j in c2.get("/jobs").json()} == {j["id"] for j in client.get("/jobs").json()}
            c2.close()
    finally:
        restarted.runner.shutdown()
