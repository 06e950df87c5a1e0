"""The tab under gradio 3.41: it builds, and its callbacks — found through the Blocks' own event wiring, as
gradio calls them — run against a real ``Service`` (on the embedded toy model, or the tiny random model
until the toy weights are built). Model steps need diffusers (standalone profile); the others run in both."""

from __future__ import annotations

import dataclasses
import inspect
import threading

import pytest

from conftest import needs_diffusers
from lora_trainer.config import TrainConfig

gr = pytest.importorskip("gradio")

from lora_trainer.service import Service, StandaloneModels  # noqa: E402
from lora_trainer.ui import controls as C  # noqa: E402
from lora_trainer.ui import step_prepare, step_tag, step_test, step_train  # noqa: E402
from lora_trainer.ui.tab import build_tab, parts_of  # noqa: E402

NAMES = step_train.NAMES


def world_images(folder, n=4, seed=0):
    import numpy as np

    from lora_trainer.toy.world import render, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        render(sample_scene(rng)).save(folder / f"pic{i}.png")
        out.append(str(folder / f"pic{i}.png"))
    return out


def handlers(blocks, comp, trigger="click"):
    """The functions gradio runs for ``comp``'s ``trigger`` (3.41: targets + trigger; 4.x: (id, trigger))."""
    out = []
    for i, dep in enumerate(blocks.dependencies):
        for tgt in dep["targets"]:
            tid, trig = (tgt[0], tgt[1]) if isinstance(tgt, (list, tuple)) else (tgt, dep.get("trigger"))
            if tid == comp._id and trig == trigger:
                out.append((blocks.fns[i].fn, dep))
    assert out, f"no {trigger} handler on {comp.elem_id}"
    return out


def load_handlers(blocks):
    """(fn, dependency) of every page-load event (3.41: trigger "load", no targets; 4.x: (id, "load"))."""
    return [(fn, dep) for fn, dep in zip((f.fn for f in blocks.fns), blocks.dependencies)
            if dep.get("trigger") == "load" or any(isinstance(t, (list, tuple)) and t[1] == "load"
                                                   for t in dep["targets"])]


def handler(blocks, comp, trigger="click"):
    return handlers(blocks, comp, trigger)[0][0]


def followers(blocks, comp, trigger="click"):
    """The functions chained with ``.then`` after ``comp``'s ``trigger`` handler (run when it has ended),
    with their dependency."""
    first = next(i for i, dep in enumerate(blocks.dependencies) if (blocks.fns[i].fn, dep) in
                 handlers(blocks, comp, trigger))
    return [(blocks.fns[i].fn, dep) for i, dep in enumerate(blocks.dependencies) if dep.get("trigger_after") == first]


def component(blocks, elem_id):
    return next(c for c in blocks.config["components"] if c["props"].get("elem_id") == elem_id)


def last(gen):
    """Run a generator callback to its end; its last yield is what the page shows at the end."""
    out = None
    for out in gen:
        pass
    return out


def text(x) -> str:
    return x.get("value", "") if isinstance(x, dict) else str(x)


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = Service(tmp_path_factory.mktemp("ws"), StandaloneModels(device="cpu"))
    yield s
    s.runner.shutdown()


@pytest.fixture(scope="module")
def tab(svc):
    blocks = build_tab(svc, {"host": "test", "warnings": ["SD2: UNet only"]})
    parts_of(blocks)["ctx"].poll = 0.05
    return blocks


def train_values(svc, project, **over):
    cfg = dataclasses.asdict(svc.train_config(project))
    cfg.update(over)
    return [C.to_display(TrainConfig, n, cfg[n]) for n in NAMES]


# --------------------------------------------------------------------------------------------- building

def test_tab_builds_with_prefixed_ids_a_tooltip_for_every_option_and_seven_steps(tab):
    cfg = tab.config
    ids = [c["props"].get("elem_id") for c in cfg["components"] if c["props"].get("elem_id")]
    assert len(ids) == len(set(ids)), "duplicate elem_id"
    assert all(i.startswith("lt-") for i in ids), [i for i in ids if not i.startswith("lt-")]
    tips = parts_of(tab)["ctx"].tips
    for cls, prefix, skip in ((TrainConfig, "lt-train", ()), (step_prepare.PrepareConfig, "lt-prepare",
                                                              step_prepare.SKIP)):
        for f in dataclasses.fields(cls):
            if f.name not in skip:
                eid = C.elem_id(prefix, f.name)
                # (the optimizer's may add where AdamW8bit falls back to AdamW on this device)
                assert eid in ids and tips[eid].startswith(f.metadata["help"]), eid
    for name in step_tag.OPTION_NAMES + ["tagger", "trigger"]:
        assert C.elem_id("lt-tag", name) in tips
    assert all(tips.values()) and set(tips) <= set(ids)
    tabs = [c["props"]["label"] for c in cfg["components"] if c["type"] == "tabitem"
            and (c["props"].get("elem_id") or "").startswith("lt-step-")]
    assert tabs == ["1 · Images", "2 · Crop & background", "3 · Auto-tag", "4 · Edit tags", "5 · Estimate LR",
                    "6 · Train", "7 · Test"]
    host = next(c for c in cfg["components"] if c["props"].get("elem_id") == "lt-host-info")
    assert "SD2: UNet only" in host["props"]["value"]


def test_run_buttons_stream_and_cancel_buttons_skip_the_queue(tab):
    steps = parts_of(tab)["steps"]
    for key in ("prepare", "tag", "estimate", "train", "test"):
        fn, dep = handlers(tab, steps[key]["run"])[0]
        assert inspect.isgeneratorfunction(fn), key
        cancel_fn, cancel_dep = handlers(tab, steps[key]["cancel"])[0]
        assert cancel_dep["queue"] is False, key


def test_zh_CN_builds_in_chinese(svc):
    blocks = build_tab(svc, {"lang": "zh_CN"})
    t = parts_of(blocks)["ctx"].t
    labels = [c["props"].get("label") for c in blocks.config["components"]] + [
        c["props"].get("value") for c in blocks.config["components"] if c["type"] == "button"]
    assert "1 · 图片" in labels and "UNet 学习率" in labels and "训练" in labels
    helps = {f.metadata["help"] for cls in (TrainConfig, step_prepare.PrepareConfig, step_tag.TagConfig)
             for f in dataclasses.fields(cls)}
    # Every label, button and message is translated; an option's help text may lag behind an edit of the
    # dataclass (it then shows in English), but not by much.
    assert not (t.missing - helps), t.missing - helps
    assert len(t.missing) <= 0.1 * len(helps), t.missing
    tips = parts_of(blocks)["ctx"].tips
    assert tips["lt-train-rank"] == "LoRA 秩（network_dim）：LoRA 的容量"


def test_a_host_that_cannot_train_disables_training(svc):
    blocks = build_tab(svc, {"can_train": False, "warnings": ["Forge 2: cannot train in place"]})
    steps = parts_of(blocks)["steps"]
    assert steps["train"]["run"].interactive is False and steps["estimate"]["run"].interactive is False
    ids = {c["props"].get("elem_id"): c for c in blocks.config["components"]}
    assert "lt-train-blocked" in ids and "Forge 2" in ids["lt-host-info"]["props"]["value"]


# --------------------------------------------------------------------------------------------- callbacks

def test_project_images_prepare_tag_and_clear_errors(svc, tab, tmp_path):
    p = parts_of(tab)
    steps = p["steps"]
    create = handler(tab, p["create"])
    dd, name_box, msg = create("amy", "zkw", 2)
    assert dd["value"] == "amy" and "amy" in dd["choices"] and "amy" in msg
    again = create("amy", "zkw", 2)
    assert again[-1].startswith("⚠ **project") and "already exists" in again[-1] and "Traceback" not in again[-1]

    # every step refreshes when the project is opened
    changes = handlers(tab, p["ctx"].project, "change")
    assert len(changes) == 2  # one callback fills the summary and the seven steps; the Disk line
    (open_project, _dep), (disk_line, _ddep) = changes
    assert len(open_project("amy")) == len(_dep["outputs"])
    disk_line("amy")

    add = handlers(tab, steps["images"]["add"])[0][0]
    gallery, _sel, summary, msg = add("amy", [type("F", (), {"name": f})() for f in world_images(tmp_path / "up")])
    assert len(gallery) == 4 and "4 image(s) added" in msg and "4 source images" in summary
    gallery, _sel, summary, msg = handler(tab, steps["images"]["remove"])("amy", "pic3.png")
    assert len(gallery) == 3 and "pic3.png" in msg and "3 source images" in summary
    assert handler(tab, steps["images"]["add"])("amy", None)[-1].startswith("⚠")

    prep_vals = [step_prepare.proposal(svc, {})[0].get(n, C.default_of(step_prepare.PrepareConfig, n))
                 for n in step_prepare.names()]
    out = last(handler(tab, steps["prepare"]["run"])("amy", *prep_vals))
    progress, pics, report, msg = out
    assert 'data-status="finished"' in progress and msg.startswith("Finished")
    assert len(pics) == 6 and "**3** ok" in report                     # before + after for 3 images
    assert svc.images("amy", "dataset") == ["pic0.png", "pic1.png", "pic2.png"]

    tag_vals = [C.default_of(step_tag.TagConfig, n) for n in step_tag.OPTION_NAMES]
    stray = svc.dataset_dir("amy") / "IMG_8.HEIC"  # not captioned, and named in the step's message
    stray.write_bytes(b"x")
    out = last(handler(tab, steps["tag"]["run"])("amy", "toy", "zkw", *tag_vals))
    stray.unlink()
    assert 'data-status="finished"' in out[0] and len(out[1]) == 3
    assert "tagged: 3, skipped: 1" in out[-1] and "Skipped: IMG_8.HEIC (a format training does not read" in out[-1]
    assert all(cap.startswith("zkw, ") for _img, cap in out[1])
    # a tagger that cannot run here: the message at once, beside the step, and no job queued
    jobs = len(svc.runner.list())
    wd14 = dict(zip(step_tag.OPTION_NAMES, tag_vals), model_dir=str(tmp_path / "no-model"))
    out = last(handler(tab, steps["tag"]["run"])("amy", "wd14", "zkw", *[wd14[n] for n in step_tag.OPTION_NAMES]))
    assert out[-1].startswith("⚠ **tagger &#x27;wd14&#x27; is not available") and "model.onnx" in out[-1], out[-1]
    assert len(svc.runner.list()) == jobs

    fc = step_train.forecast_text(p["ctx"], "amy", *train_values(svc, "amy"))
    cfg = svc.train_config("amy")
    import math
    assert f"3 images × {cfg.repeats} repeats × {cfg.epochs} epochs" in fc
    assert f"**{math.ceil(3 * cfg.repeats / cfg.batch_size) * cfg.epochs} steps**" in fc and "⚠" not in fc
    phone = svc.dataset_dir("amy") / "IMG_9.HEIC"  # put there by hand: left out of training, and said so
    phone.write_bytes(b"x")
    fc = step_train.forecast_text(p["ctx"], "amy", *train_values(svc, "amy"))
    phone.unlink()
    assert "⚠ 1 file(s) in a format training does not read are left out, e.g. IMG_9.HEIC" in fc

    # no project open: a message beside the step, never a traceback
    for key, args in (("prepare", prep_vals), ("tag", ["toy", "", *tag_vals]), ("train", train_values(svc, "amy"))):
        out = last(handler(tab, steps[key]["run"])(None, *args))
        assert out[-1].startswith("⚠ **no project is open**"), (key, out[-1])
    bad = train_values(svc, "amy", rank=0)
    out = last(handler(tab, steps["train"]["run"])("amy", *bad))
    assert "rank" in out[-1] and "minimum" in out[-1]
    assert handler(tab, steps["prepare"]["cancel"])("amy") == "Nothing to cancel."


@needs_diffusers
def test_estimate_train_resume_and_test_on_the_model(svc, tab, tmp_path):
    p = parts_of(tab)
    steps = p["steps"]
    svc.create_project("bo", trigger="zkw", repeats=2)
    svc.add_images("bo", world_images(tmp_path / "up", 4, seed=1))
    assert svc.runner.wait(svc.preprocess("bo", {"size": 64}), 300)["status"] == "finished"
    assert svc.runner.wait(svc.autotag("bo", {"tagger": "toy", "trigger": "zkw"}), 300)["status"] == "finished"

    # 5 · Estimate: cancel once the probe has taken two steps; the proposal is still made and can be used
    cancel = handler(tab, steps["estimate"]["cancel"])
    out = None
    for out in handler(tab, steps["estimate"]["run"])("bo", 64, 600, *train_values(svc, "bo")):
        prog = (svc.runner.list()[-1].get("progress") or {})
        if prog.get("d_lr") is not None and prog.get("step", 0) >= 2:
            cancel("bo")
    progress, plot, summary, use_btn, res, msg = out
    assert 'data-status="cancelled"' in progress and res["unet_lr"] > 0 and plot.endswith("lr-estimate.png")
    assert f"**{res['unet_lr']}**" in summary and "stopped by you" in summary
    u, te, msg = handler(tab, steps["estimate"]["use"])(res)
    assert (u, te) == (res["unet_lr"], res["text_encoder_lr"]) and "now uses" in msg

    # 6 · Train a few steps with the estimate, an intermediate save halfway
    vals = train_values(svc, "bo", max_steps=2, save_fractions=[0.5], optimizer="AdamW", sync_every=1,
                        unet_lr=u, text_encoder_lr=te)
    progress, loss, _samples, files, resume_dd, msg = last(handler(tab, steps["train"]["run"])("bo", *vals))
    assert 'data-status="finished"' in progress and "zkw.safetensors" in msg, msg
    assert loss is not None and loss.size[0] > 100
    assert "zkw-step000001.safetensors" in files and "zkw.safetensors" in files
    assert svc.train_config("bo").unet_lr == u                      # the run's config was kept

    # cancel a run, then resume it from its saved state
    # (4 images × 2 repeats ÷ batch 4 = 2 steps an epoch: 3 epochs = 6 steps)
    vals = train_values(svc, "bo", max_steps=6, epochs=3, save_fractions=[], optimizer="AdamW", sync_every=1)
    runner = handler(tab, steps["train"]["run"])("bo", *vals)
    cancelled = None
    for out in runner:
        prog = svc.runner.list()[-1].get("progress") or {}
        if prog.get("phase") == "train" and prog.get("step", 0) >= 1 and cancelled is None:
            cancelled = handler(tab, steps["train"]["cancel"])("bo")
    assert cancelled == "Cancelling…" and 'data-status="cancelled"' in out[0]
    choices = step_train.resumable(svc, "bo")
    assert len(choices) == 1
    out = last(handler(tab, steps["train"]["resume"])("bo", choices[0]))
    assert 'data-status="finished"' in out[0] and "6/6" in out[0]

    # 7 · Test: two seeds with the final file, then the epoch × weight grid
    t = steps["test"]
    files = handler(tab, t["refresh"])("bo")[1]["choices"]
    assert sorted(files) == ["zkw-step000001.safetensors", "zkw.safetensors"]
    assert t["sampler"].choices[0] in ("Euler", ("Euler", "Euler")) and len(t["sampler"].choices) >= 4
    progress, pics, msg = last(handler(tab, t["run"])("bo", "zkw, red", "", "1, 2", 1.0, 2, 7.0, 0, "Euler a",
                                                     "zkw.safetensors"))
    assert 'data-status="finished"' in progress and len(pics) == 2 and pics[1][1].endswith("seed 2")
    assert svc.runner.list()[-1]["config"]["sampler"] == "Euler a"
    progress, grid, msg = last(handler(tab, t["grid_run"])("bo", "zkw", "", "3", 2, 7.0, 0, "DDIM", files, "0.5, 1"))
    assert grid.size[1] == 22 + 2 * 160 and "4 images" in msg
    assert svc.runner.list()[-1]["config"]["sampler"] == "DDIM"
    bad = last(handler(tab, t["run"])("bo", "x", "", "one, two", 1.0, 2, 7.0, 0, "Euler", "zkw.safetensors"))
    assert bad[-1].startswith("⚠ **seeds")
    bad = last(handler(tab, t["run"])("bo", "x", "", "1", 1.0, 2, 7.0, 0, "Nope", "zkw.safetensors"))
    assert bad[-1].startswith("⚠ **unknown sampler") and "Euler a" in bad[-1]
    # "Use in the WebUI": standalone there is no Lora folder, and the message says where the file is
    msg = handler(tab, t["publish"])("bo", "zkw.safetensors")
    assert msg.startswith("⚠") and "no WebUI Lora folder" in msg and "zkw.safetensors" in msg
    assert "choose a LoRA file first" in handler(tab, t["publish"])("bo", step_test.NO_LORA)


def test_estimate_step_shows_its_probe_size_and_step_cap(svc, tab):
    """The probe's own size and step cap are controls (from the model's preset, not Train's resolution),
    and the box beside them says what the probe will do."""
    est = parts_of(tab)["steps"]["estimate"]
    preset = svc.models.preset() or {}
    assert est["resolution"].value == preset.get("resolution", TrainConfig.resolution) and est["max_steps"].value == 600
    assert f"{est['resolution'].value} px" in est["probe"].value and "600 steps" in est["probe"].value
    assert "Press Forecast" in est["probe"].value
    box, msg = handler(tab, est["resolution"], "change")(128, 50)
    assert "**128 px**" in box and "**50 steps**" in box and msg == ""
    assert "stops sooner" in box
    box, _msg = handler(tab, est["max_steps"], "change")(64, 10)  # a cap below the plateau rule's least
    assert "**10 steps**" in box and "stops sooner" not in box and "at most **" not in box, box
    box, msg = handler(tab, est["max_steps"], "change")(64, 0)
    assert msg.startswith("⚠") and "step cap" in msg


@needs_diffusers
def test_estimate_runs_and_forecasts_with_the_probe_settings(svc, tab, tmp_path):
    steps = parts_of(tab)["steps"]
    est = steps["estimate"]
    svc.create_project("pe", trigger="zkw", repeats=1)
    svc.add_images("pe", world_images(tmp_path / "up", 2, seed=3))
    assert svc.runner.wait(svc.preprocess("pe", {"size": 64}), 300)["status"] == "finished"
    vals = train_values(svc, "pe", resolution=512)  # Train's size is not the probe's
    box, msg = last(handler(tab, est["forecast"])("pe", 32, 7, *vals))
    assert "**32 px**" in box and "**7 steps**" in box and "Forecast: at most ~" in box and "s/step on cpu" in box, box
    fc_job = svc.runner.list()[-1]
    assert fc_job["kind"] == "forecast" and fc_job["config"]["train"]["resolution"] == 32
    assert fc_job["result"]["steps"] == 7
    gen = handler(tab, est["run"])("pe", 32, 7, *vals)
    next(gen)
    job = svc.runner.list()[-1]
    handler(tab, est["cancel"])("pe")
    for _ in gen:
        pass
    assert job["kind"] == "estimate" and job["config"]["train"]["resolution"] == 32
    assert job["config"]["rule"]["max_steps"] == 7


@needs_diffusers
def test_do_the_rest_with_the_recipe(svc, tab, tmp_path):
    p = parts_of(tab)
    steps = p["steps"]
    svc.create_project("cy", trigger="qrz", repeats=2)
    svc.add_images("cy", world_images(tmp_path / "up", 3, seed=2))
    prep_vals = [C.default_of(step_prepare.PrepareConfig, n) for n in step_prepare.names()]
    prep_vals[step_prepare.names().index("size")] = 64
    tag_vals = [C.default_of(step_tag.TagConfig, n) for n in step_tag.OPTION_NAMES]
    vals = train_values(svc, "cy", max_steps=2, optimizer="AdamW", save_fractions=[])
    run = handler(tab, p["recipe"]["run"])
    seen = []
    for out in run("cy", False, *prep_vals, "toy", "qrz", *tag_vals, *vals):
        seen.append(out[0])
    progress, pics, msg = out
    assert "Done: qrz.safetensors" in msg and len(pics) == 2
    for what in ("step 1 of 4: Crop &amp; background", "step 2 of 4: Auto-tag", "step 3 of 4: Train",
                 "step 4 of 4: Test"):
        assert any(what in s for s in seen), what
    assert [o["name"] for o in svc.outputs("cy")] == ["qrz.safetensors"]
    # a second click has nothing left to prepare or tag: it trains and tests again
    from lora_trainer.ui import recipe

    assert recipe.plan(svc, "cy", "toy", estimate=True) == ["estimate", "train", "generate"]


def test_cancel_from_another_thread_reaches_the_running_job(svc, tab, tmp_path):
    """The Cancel button runs outside the queue, while the Run generator is still streaming."""
    p = parts_of(tab)
    steps = p["steps"]
    svc.create_project("dd", trigger="zkw", repeats=1)
    svc.add_images("dd", world_images(tmp_path / "up", 12, seed=3))
    gate = threading.Event()

    def slow(ctx):
        ctx.progress({"phase": "wait", "step": 0, "total": 1})
        gate.wait(10)
        ctx.check_cancel()
        return {}

    job = svc.runner.submit("preprocess", slow, config={"project": "dd"}, parent=svc.project("dd").jobs)
    from lora_trainer.ui.common import watch

    states = watch(svc, job, 0.05)
    assert next(states)["status"] in ("queued", "running")
    assert handler(tab, steps["prepare"]["cancel"])("dd") == "Cancelling…"
    gate.set()
    assert last(states)["status"] == "cancelled"


def test_the_webui_settings_choose_the_proposed_tagger_and_background(tmp_path, monkeypatch):
    """The settings "default tagger" and "background model" (on_ui_settings) are what the steps propose,
    when available; otherwise the built-in order applies."""
    from lora_trainer.prepare.background import rembg_available

    _, default, _ = step_tag.tagger_choices()
    assert default == "wd-vit-tagger-v3"    # no host here: the WD v3 tagger, downloadable beside the choice
    info = [{"name": n, "available": True, "reason": ""} for n in ("none", "toy", "deepbooru", "wd-vit-tagger-v3")]
    assert step_tag.propose_tagger(info) == "deepbooru"                   # a host with Deepbooru
    assert step_tag.propose_tagger(info[:2] + info[3:], "deepbooru") == "wd-vit-tagger-v3"  # Forge Neo: none
    assert step_tag.propose_tagger(info, "toy") == "toy"
    assert step_tag.tagger_choices(toy_model=True)[1] == "toy"            # the embedded toy model: its tagger
    assert step_tag.propose_tagger(info[:2] + info[3:], toy_model=True) == "toy"
    assert step_tag.tagger_choices(preferred="none")[1] == "none"
    assert step_tag.tagger_choices(preferred="deepbooru")[1] == default   # unavailable: the built-in order
    if not rembg_available()[0]:
        pytest.skip("rembg is not importable here")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    for name in ("u2net", "u2netp"):
        (tmp_path / f"{name}.onnx").write_bytes(b"model")
    svc = Service(tmp_path / "ws", StandaloneModels())
    assert step_prepare.proposal(svc, {})[0]["background"] == "u2net"
    assert step_prepare.proposal(svc, {"rembg_model": "u2netp"})[0]["background"] == "u2netp"
    assert step_prepare.proposal(svc, {"rembg_model": "isnet-anime"})[0]["background"] == "u2net"  # no file


# --------------------------------------------------------------------------------------------- status (#28, #29)

def _file(path):
    """What gradio 3.41's File component hands a callback: a tempfile wrapper with ``.name``."""
    return type("F", (), {"name": str(path)})()


def test_adding_images_names_refused_files_skips_duplicates_and_updates_the_header_at_once(svc, tab, tmp_path):
    """An empty file in a multi-file upload is refused by name (it used to block the whole batch), a text file
    named .jpg too; adding the same files again adds nothing; the project header is an output of the same
    event (a second handler used to race it and showed the old count)."""
    p = parts_of(tab)
    images = p["steps"]["images"]
    svc.create_project("ivy", trigger="zkw")
    (add_fn, dep), = handlers(tab, images["add"])
    assert p["summary"]._id in dep["outputs"] and images["gallery"]._id in dep["outputs"]
    up = tmp_path / "up"
    good = world_images(up, 7, seed=11)
    (up / "empty.jpg").write_bytes(b"")
    (up / "notes.jpg").write_text("not a photo", encoding="utf-8")
    gallery, _sel, summary, msg = add_fn("ivy", [_file(f) for f in good + [up / "empty.jpg", up / "notes.jpg"]])
    assert len(gallery) == 7 and "7 image(s) added" in msg, msg
    assert "**ivy**" in summary and "7 source images" in summary, summary
    assert "empty.jpg (empty file (0 bytes)" in msg and "notes.jpg (not an image" in msg, msg
    gallery, _sel, summary, msg = add_fn("ivy", [_file(f) for f in good[:3]])
    assert len(gallery) == 7 and "0 image(s) added" in msg and "Exact duplicates, skipped:" in msg
    assert "pic0.png (exact duplicate of pic0.png, already in the project" in msg, msg
    assert "7 source images" in summary and svc.images("ivy", "source") == [f"pic{i}.png" for i in range(7)]
    # in Chinese too
    zh = build_tab(svc, {"lang": "zh_CN"})
    out = handlers(zh, parts_of(zh)["steps"]["images"]["add"])[0][0]("ivy", [_file(up / "empty.jpg"), _file(good[0])])
    assert "已跳过" in out[-1] and "请等上传完成后再添加一次" in out[-1], out[-1]


def test_the_no_caption_warning_goes_when_tagging_ends(svc, tab, tmp_path):
    p = parts_of(tab)
    steps = p["steps"]
    svc.create_project("jo", trigger="zkw", repeats=2)
    svc.add_images("jo", world_images(tmp_path / "up", 3, seed=12))
    assert svc.runner.wait(svc.preprocess("jo", {"crop": "center", "size": 64, "background": "none"}),
                           300)["status"] == "finished"
    vals = train_values(svc, "jo")
    assert "3 image(s) have no caption" in step_train.forecast_text(p["ctx"], "jo", *vals)
    tag_vals = [C.default_of(step_tag.TagConfig, n) for n in step_tag.OPTION_NAMES]
    out = last(handler(tab, steps["tag"]["run"])("jo", "toy", "zkw", *tag_vals))
    assert 'data-status="finished"' in out[0]
    # what runs when the tag run has ended: the Train step's forecast is refreshed
    then = [(fn, dep) for fn, dep in followers(tab, steps["tag"]["run"])
            if steps["train"]["forecast"]._id in dep["outputs"]]
    assert then, "nothing refreshes the Train step's forecast after tagging"
    fn, dep = then[0]
    fc = fn("jo", *vals)
    assert "3 images × 2 repeats" in fc and "no caption" not in fc, fc


@pytest.mark.skipif(not __import__("importlib").util.find_spec("cv2"), reason="OpenCV not installed in this venv")
def test_a_face_crop_that_finds_no_face_says_so_in_the_message(svc, tab, tmp_path):
    p = parts_of(tab)
    svc.create_project("kai", trigger="zkw")
    svc.add_images("kai", world_images(tmp_path / "up", 2, seed=13))  # toy shapes: no face anywhere
    vals = [step_prepare.proposal(svc, {})[0].get(n, C.default_of(step_prepare.PrepareConfig, n))
            for n in step_prepare.names()]
    vals[step_prepare.names().index("crop")] = "face"
    vals[step_prepare.names().index("background")] = "none"
    progress, _pics, report, msg = last(handler(tab, p["steps"]["prepare"]["run"])("kai", *vals))
    assert 'data-status="finished"' in progress, msg
    assert "2 with warnings" in report and "no face found" in report
    assert "⚠ 2 image(s) with warnings:" in msg and "pic0.png: no face found: centre crop used" in msg, msg


def test_the_optimizer_option_says_where_adamw8bit_falls_back(svc, tab):
    """The recipe proposes AdamW8bit; where bitsandbytes cannot load or step on this device (the WebUI 1.10
    profile's 0.45.5 on the CPU), the option itself says the run will use AdamW. The probe is the real one."""
    import torch

    from lora_trainer.training.optim import build_optimizer

    p = torch.nn.Parameter(torch.zeros(8))
    _opt, used, why = build_optimizer("AdamW8bit", [{"params": [p], "lr": 1e-3}], torch.device("cpu"))  # svc: cpu
    assert (used == "AdamW") == bool(why)
    why = (why or "").split(": ", 1)[-1]
    from lora_trainer.ui import step_train

    props = component(tab, "lt-train-optimizer")["props"]
    assert props["value"] == "AdamW8bit" and {"AdamW8bit", "AdamW"} <= set(props["choices"])
    assert props["label"] == "Optimizer"  # built without the probe: it runs when the page loads
    [(on_load, _dep)] = [(fn, d) for fn, d in load_handlers(tab)
                         if d["outputs"] == [component(tab, "lt-train-optimizer")["id"]]]
    upd = on_load()
    if why:
        assert upd["label"] == "Optimizer · AdamW8bit falls back to AdamW on cpu", upd
        assert why in upd["info"], upd
        zh = step_train.optimizer_update(parts_of(build_tab(svc, {"lang": "zh_CN"}))["ctx"])["label"]
        assert zh.endswith("AdamW8bit 在 cpu 上会退回 AdamW"), zh
    else:
        assert upd["label"] == "Optimizer" and not upd["info"], upd


def test_a_download_button_beside_a_missing_model_fetches_it_and_hides(tmp_path, monkeypatch):
    """The proposed WD v3 tagger's files are missing: a Download button is shown beside the choice; its
    handler runs the store download as a job against a real hub double (HF_ENDPOINT), with progress, and
    ends with the files on disk and the button hidden. Choosing a model that needs nothing hides it too."""
    import hashlib

    from hub_server import HubDouble
    from lora_trainer import model_store

    hub = HubDouble()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("LORA_TRAINER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.setattr(model_store, "HOST_MODELS_DIR", [])
    vit = "wd-vit-tagger-v3"
    model = hashlib.shake_256(b"tab model").digest(300_000)
    hub.add_hub(f"SmilingWolf/{vit}", "model.onnx", model)
    hub.add_hub(f"SmilingWolf/{vit}", "selected_tags.csv", b"tag_id,name,category,count\n0,a,0,1\n", lfs=False)
    s = Service(tmp_path / "ws", StandaloneModels(base_model="someone/sd-model", device="cpu"))  # not the toy
    try:
        blocks = build_tab(s, {"host": "test"})
        parts_of(blocks)["ctx"].poll = 0.02
        tag = parts_of(blocks)["steps"]["tag"]
        label = component(blocks, "lt-tag-tagger")["props"]["value"]  # the dropdown shows labels (3.41)
        assert label == f"{vit} (unavailable)", label
        assert component(blocks, "lt-tag-tagger-download")["props"]["visible"] is True
        show = next(fn for fn, dep in handlers(blocks, tag["tagger"], "change")
                    if tag["download"]._id in dep["outputs"])
        assert show("toy")["visible"] is False and show(label)["visible"] is True
        outs = list(handler(blocks, tag["download"])(label))
        assert len(outs) >= 2 and outs[-1][1]["visible"] is False, outs[-1][2]
        assert "Downloaded" in text(outs[-1][2]) and "lt-progress" in outs[-1][0]
        assert (model_store.find(vit) / "model.onnx").read_bytes() == model
        refresh = followers(blocks, tag["download"])[0][0]
        fresh = refresh(label)
        assert fresh["value"] == vit and vit in fresh["choices"], fresh  # now available: its plain name
        assert tag["tagger_names"][vit] == vit and tag["tagger_names"][label] == vit  # both labels map back
        assert show(vit)["visible"] is False
        prep = parts_of(blocks)["steps"]["prepare"]
        show_bg = next(fn for fn, dep in handlers(blocks, prep["controls"]["background"], "change")
                       if prep["download"]._id in dep["outputs"])
        assert show_bg("u2netp")["visible"] is True and show_bg("none")["visible"] is False
    finally:
        s.runner.shutdown()
        hub.close()


# --------------------------------------------------------------------------------------------- choices, reload

def _labels(comp) -> list:
    """A choice component's labels as the page shows them (3.41 Dropdown: the strings; pairs elsewhere)."""
    return [c[0] if isinstance(c, (tuple, list)) else c for c in comp.choices]


def choice_components(blocks) -> list:
    return [b for b in blocks.blocks.values() if isinstance(b, (gr.Dropdown, gr.Radio, gr.CheckboxGroup))]


def test_every_dropdown_shows_plain_labels_not_pairs(tab):
    """gradio 3.41's Dropdown turns a (label, value) pair into its repr ("('toy', 'toy')") and sends that
    back (pairs came in 4.0): every dropdown of the tab holds plain strings."""
    comps = choice_components(tab)
    assert len(comps) >= 10
    for comp in comps:
        for label in _labels(comp):
            assert isinstance(label, str) and not (label.startswith(("(", "[")) and "," in label), \
                (comp.elem_id, label)


def test_every_tagger_in_the_dropdown_is_understood(svc, tab, tmp_path):
    """What the page sends for each tagger entry is what the step runs: a known tagger, never "unknown"."""
    steps = parts_of(tab)["steps"]
    svc.create_project("tg", trigger="zkw", repeats=1)
    tag_vals = [C.default_of(step_tag.TagConfig, n) for n in step_tag.OPTION_NAMES]
    run = handler(tab, steps["tag"]["run"])
    labels = _labels(steps["tag"]["tagger"])
    assert steps["tag"]["tagger"].value in labels and "toy" in labels
    for label in labels:
        msg = last(run("tg", label, "zkw", *tag_vals))[-1]
        assert "unknown tagger" not in msg, (label, msg)
        assert ("unavailable" in label) == ("not available" in msg), (label, msg)


def test_a_reloaded_page_opens_the_project_last_opened_with_its_settings(tmp_path):
    """A reload keeps no page state: the page's dropdown comes back with the value the tab was built with.
    The load event puts the project the tab opened last back, with that project's saved settings."""
    s = Service(tmp_path / "ws", StandaloneModels(device="cpu"))
    try:
        s.create_project("aaa", trigger="a", repeats=1)
        blocks = build_tab(s, {"host": "test"})
        p = parts_of(blocks)
        steps = p["steps"]
        s.create_project("bbb", trigger="b", repeats=1)
        s.save_train_config("bbb", s.train_config("bbb", {"resolution": 768, "max_steps": 40}))
        open_project = handlers(blocks, p["ctx"].project, "change")[0][0]  # (then the Disk line's)
        open_project("bbb")                                     # the person picked bbb
        [(on_load, dep)] = [x for x in load_handlers(blocks) if p["ctx"].project._id in x[1]["outputs"]]
        out = dict(zip(dep["outputs"], on_load("aaa")))        # the reloaded page still says aaa
        assert out[p["ctx"].project._id]["value"] == "bbb"
        ctrls = steps["train"]["controls"]
        assert out[ctrls["resolution"]._id]["value"] == 768 and out[ctrls["max_steps"]._id]["value"] == 40
        assert out[steps["tag"]["trigger"]._id] == "b"
        # the project in view is the one acted on: the step's run takes the dropdown's value
        fn, dep = handlers(blocks, steps["train"]["run"])[0]
        assert dep["inputs"][0] == p["ctx"].project._id
    finally:
        s.runner.shutdown()


def test_the_webui_keeps_no_copy_of_the_tabs_values(svc):
    """The WebUI's ui-config.json would bring back first-start values over the project's own on every
    start; every component of the tab carries the WebUI's opt-out."""
    blocks = build_tab(svc, {"host": "test"})
    assert all(getattr(b, "do_not_save_to_config", False) for b in blocks.blocks.values())


def test_refresh_on_a_page_built_before_any_project_opens_the_project_not_nothing(tmp_path):
    """In the real WebUI, script.js's onUiLoaded clicks ↻ as the page's load event runs. On a page built
    while the workspace was empty the dropdown's own value is empty: ↻ must not put that back over the
    project the load opened (seen in WebUI 1.10.1: an empty dropdown beside a project summary, and every
    step answering 'no project is open')."""
    svc = Service(tmp_path / "ws", StandaloneModels(device="cpu"))
    try:
        blocks = build_tab(svc, {"host": "test"})       # no project yet
        p = parts_of(blocks)
        svc.create_project("first", trigger="f", repeats=1)
        p["ctx"].last_project = "first"                  # the load event opened it
        out = handler(blocks, p["refresh"])("")          # ↻ with the page's empty value
        assert out[0]["value"] == "first" and out[0]["choices"] == ["first"], out
        svc.create_project("second", trigger="s", repeats=1)
        assert handler(blocks, p["refresh"])("second")[0]["value"] == "second"  # a valid choice is kept
        assert handler(blocks, p["refresh"])("gone")[0]["value"] == "first"     # a deleted one is not
    finally:
        svc.runner.shutdown()


def test_a_project_brings_back_its_last_probe_size_and_cap(tmp_path):
    """The Estimate step's probe size and step cap come back with the project (from its newest estimate job),
    so a reloaded page shows what the result beside them was measured with (seen in WebUI 1.10.1: 512/600
    beside a result measured at 64 px and 10 steps)."""
    from lora_trainer.ui import step_estimate

    svc = Service(tmp_path / "ws", StandaloneModels(device="cpu"))
    try:
        svc.create_project("a", trigger="a", repeats=1)
        svc.create_project("b", trigger="b", repeats=1)
        job = svc._submit("a", "estimate", {"train": {"resolution": 64}, "rule": {"max_steps": 10}},
                          lambda ctx: {"unet_lr": 1e-4, "text_encoder_lr": 1e-5})
        svc.runner.wait(job, 30)
        blocks = build_tab(svc, {"host": "test"})
        p = parts_of(blocks)
        est = p["steps"]["estimate"]
        open_project, dep = handlers(blocks, p["ctx"].project, "change")[0]
        out = dict(zip(dep["outputs"], open_project("a")))
        assert out[est["resolution"]._id] == 64 and out[est["max_steps"]._id] == 10
        assert "**64 px**" in out[est["probe"]._id] and "**10 steps**" in out[est["probe"]._id]
        out = dict(zip(dep["outputs"], open_project("b")))  # no estimate yet: the model's defaults
        d = step_estimate.probe_defaults(svc)
        assert (out[est["resolution"]._id], out[est["max_steps"]._id]) == (d["resolution"], d["max_steps"])
    finally:
        svc.runner.shutdown()
