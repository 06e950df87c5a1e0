"""The WebUI host adapter against the WebUI double (``tests/webui_double``) with a real ldm ``LatentDiffusion``.

What issue 16 asks of training in place: after a job (also after a failure, a cancel, an Interrupt) every host
parameter is the same tensor object with the same ``data_ptr`` and bit-identical values, the module tree is
unchanged; the host's attention modules run during training; mid-job no copy of a host weight exists (and
a control that deep-copies the model is caught by the same check); progress shows in ``shared.state``; the
queue lock is held; txt2img gets the ``<lora>`` prompt without our adapters attached.
"""

from __future__ import annotations

import copy
import gc
import re
import threading

import pytest
import torch
from torch import nn

from webui_double.fixture import webui_double  # noqa: F401 - the fixture

from lora_trainer.config import TOY_PRESET
from lora_trainer.errors import UserError

# The toy preset at 4 steps (2 images x 2 repeats from the 2_tok folder, batch 1).
TRAIN = {**TOY_PRESET, "optimizer": "AdamW", "repeats": 2, "epochs": 1, "batch_size": 1, "sync_every": 1,
         "save_fractions": [0.5], "unet_lr": 1e-2, "save_precision": "fp32"}


# ---------------------------------------------------------------------------------------------- helpers

def digest(t: torch.Tensor) -> str:
    """Bit-exact fingerprint of a tensor's values (kept instead of a clone: a clone would be a live copy of
    the weights, which the mid-job check looks for)."""
    import hashlib

    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def snapshot(model):
    params = {n: (p, p.data_ptr(), digest(p), p.requires_grad) for n, p in model.named_parameters()}
    tree = [(n, type(m).__name__, "forward" in m.__dict__, m.training) for n, m in model.named_modules()]
    return params, tree


def assert_same(model, snap):
    params, tree = snap
    now = dict(model.named_parameters())
    assert now.keys() == params.keys()
    for n, (p, ptr, value, rg) in params.items():
        assert now[n] is p, f"{n}: another tensor object"
        assert p.data_ptr() == ptr, f"{n}: another storage"
        assert digest(p) == value, f"{n}: values changed"
        assert p.requires_grad == rg, f"{n}: requires_grad changed"
    assert [(n, type(m).__name__, "forward" in m.__dict__, m.training) for n, m in model.named_modules()] == tree


def _weight_shaped_tensors(model) -> list:
    """Live tensors (found through the garbage collector) shaped and typed like one of the host's Linear/Conv
    weights whose storage is not a host parameter's."""
    host_modules = list(model.model.diffusion_model.modules()) + list(model.cond_stage_model.modules())
    shapes = {(tuple(m.weight.shape), m.weight.dtype) for m in host_modules if isinstance(m, (nn.Linear, nn.Conv2d))}
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor) and not obj.is_meta
            and (tuple(obj.shape), obj.dtype) in shapes and obj.untyped_storage().data_ptr() not in storages]


def foreign_weight_copies(model, before: list = ()) -> list:
    """Shapes of weight-shaped tensors alive now that were not alive in ``before`` (taken before the job with
    ``_weight_shaped_tensors``: other tests' models of the same architecture may be cached in the process):
    a second copy of the host's weights made by the job."""
    old = {id(t) for t in before}
    return [tuple(t.shape) for t in _weight_shaped_tensors(model) if id(t) not in old]


def project(service, n: int = 2):
    from lora_trainer.training.tiny import tiny_dataset

    service.create_project("proj", trigger="tok")
    tiny_dataset(service.project("proj").dataset, n=n, repeats=2, name="tok")
    return "proj"


def random_lora_file(webui_double, path, name: str, scale: float = 0.5):
    """A kohya LoRA for the double's model with random (non-zero) up weights: it visibly changes outputs."""
    from lora_trainer.host.backend import HostBackend
    from lora_trainer.training.network import LoRANetwork
    from lora_trainer.training.saving import save_lora

    be = HostBackend()
    net = LoRANetwork({**be.lora_targets("unet"), **be.lora_targets("te")}, rank=4, alpha=4.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.loras.values():
            m.lora_up.weight.copy_(torch.randn(m.lora_up.weight.shape, generator=g) * scale)
    save_lora(path, net.state_dict_kohya(torch.float32), {"ss_output_name": name, "ss_base_model_version": "sd_v1"})
    return net


def publish_over_http(service, name: str, file: str) -> dict:
    """POST …/outputs/FILE/publish on a FastAPI app with our routes mounted, over real HTTP."""
    httpx = pytest.importorskip("httpx")
    from fastapi import FastAPI

    from lora_trainer.api import PREFIX, mount_routes
    from lora_trainer.api.serve import BackgroundServer

    app = FastAPI()
    assert mount_routes(app, service, enabled=True, auth=None)
    with BackgroundServer(app) as srv:
        r = httpx.post(f"{srv.url}{PREFIX}/projects/{name}/outputs/{file}/publish", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------------------------- training in place

def test_train_through_service_in_place_with_progress_lock_and_hooks(webui_double):
    from lora_trainer.host import webui
    from lora_trainer.host.progress import task_id

    d = webui_double
    model = d.model
    service = webui.get_service()
    assert service.runner.lock is service.host_lock
    name = project(service)
    snap = snapshot(model)
    attn = model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1
    hook_calls = []
    handle = attn.register_forward_hook(lambda *a: hook_calls.append(torch.is_grad_enabled()))
    before = _weight_shaped_tensors(model)
    seen = {}

    def at_progress(job_id, event, data):
        # mid-job: a training step after the first (the first report may come before any loss was read)
        if event == "progress" and data.get("phase") == "train" and data.get("step", 0) >= 2 and "state" not in seen:
            st = d.state
            seen["state"] = (st.job, st.job_count, st.sampling_step, st.sampling_steps, st.textinfo)
            seen["lock_locked"] = d.m("call_queue").queue_lock._lock.locked()
            seen["acquire_free"] = d.m("call_queue").queue_lock.acquire(blocking=False)
            seen["task"] = d.m("progress").current_task == task_id(job_id)
            seen["copies"] = foreign_weight_copies(model, before)

    service.runner.subscribe(at_progress)
    try:
        job = service.train(name, TRAIN)
        st = service.runner.wait(job, timeout=600)
    finally:
        handle.remove()
    assert st["status"] == "finished", st
    res = st["result"]
    assert res["steps"] == 4 and not res["cancelled"]
    assert any(hook_calls) and True in hook_calls  # the host's attention ran, with grad, during training
    job_name, job_count, step, steps, text = seen["state"]
    assert job_name == "lora_trainer:train" and job_count == 1 and steps == 4 and 2 <= step <= 4
    assert "LoRA Trainer train" in text and "loss" in text
    assert seen["lock_locked"] and seen["acquire_free"] is False and seen["task"]
    assert seen["copies"] == [], f"copies of host weights alive mid-job: {seen['copies'][:5]}"
    assert_same(model, snap)
    assert d.state.job == "" and d.state.job_count == 0  # state.end()
    assert d.m("call_queue").queue_lock.acquire(blocking=False)  # released
    d.m("call_queue").queue_lock.release()

    # published into the Lora folder with its sidecar, and the list refreshed
    published = d.lora_dir / "tok.safetensors"
    assert res["published"] == str(published) and published.is_file()
    assert (d.lora_dir / "tok.json").is_file() and "tok" in d.networks.available_networks
    assert d.networks.available_networks["tok"].alias == "tok"

    # the Test step's "Use in the WebUI": a chosen intermediate save, even with auto-publish off; the final
    # file again is the same weights, so the copy already there is reused
    d.shared.opts.data["lora_trainer_publish"] = False
    try:
        picked = service.publish_output(name, "tok-step000002.safetensors")
        again = service.publish_output(name, "tok.safetensors")
    finally:
        d.shared.opts.data.pop("lora_trainer_publish", None)
    assert picked == d.lora_dir / "tok-step000002.safetensors" and picked.is_file()
    assert "tok-step000002" in d.networks.available_networks and again == published
    # ... and over the API (our routes as on_app_started mounts them): the copy already there is named
    over_http = publish_over_http(service, name, "tok-step000002.safetensors")
    assert over_http == {"file": "tok-step000002.safetensors", "path": str(picked), "name": "tok-step000002",
                         "prompt": "<lora:tok-step000002:1>"}

    # a test image through the host's txt2img, with and without the LoRA (same seed)
    calls = d.m("processing").calls
    gen = service.generate(name, ["tok, red square"], lora="tok.safetensors", seeds=(3,), steps=3, size=64)
    assert service.runner.wait(gen, timeout=300)["status"] == "finished"
    call = calls[-1]
    # the published copy holds the same weights: the test uses it, no second copy in lora_trainer_tests/
    assert call["prompt"] == "tok, red square <lora:tok:1>"
    assert not list((d.lora_dir / "lora_trainer_tests").glob("*.safetensors"))
    assert call["foreign_forwards"] == 0 and call["queue_lock_held"] and call["loaded_networks"]
    assert d.networks.loaded_networks == []  # unloaded after the generation ...
    assert_same(model, snap)                 # ... and the merged weights restored
    assert (service.runner.job_dir(gen) / "image-000.png").is_file()


def test_injected_failure_restores_model_and_releases_everything(webui_double, monkeypatch):
    from lora_trainer.host import webui
    from lora_trainer.host.backend import HostBackend

    d = webui_double
    service = webui.get_service()
    name = project(service)
    snap = snapshot(d.model)
    real = HostBackend.denoise
    calls = {"n": 0}

    def failing(self, *a):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (simulated)")
        return real(self, *a)

    monkeypatch.setattr(HostBackend, "denoise", failing)
    st = service.runner.wait(service.train(name, TRAIN), timeout=600)
    assert st["status"] == "failed" and "out of memory" in st["error"]["message"]
    assert "batch size" in st["error"]["hint"]
    assert_same(d.model, snap)
    assert d.state.job == "" and d.m("progress").current_task is None
    assert d.m("call_queue").queue_lock.acquire(blocking=False)
    d.m("call_queue").queue_lock.release()


def test_interrupt_button_cancels_the_job_and_restores(webui_double):
    from lora_trainer.host import webui

    d = webui_double
    service = webui.get_service()
    name = project(service)
    snap = snapshot(d.model)

    def press_interrupt(job_id, event, data):
        if event == "progress" and data.get("phase") == "train" and data.get("step") == 1:
            d.state.interrupt()  # what the Interrupt button (or POST /sdapi/v1/interrupt) does

    service.runner.subscribe(press_interrupt)
    st = service.runner.wait(service.train(name, {**TRAIN, "epochs": 100}), timeout=600)
    assert st["status"] == "cancelled", st
    assert st["result"]["steps"] < 50 and st["result"]["published"] is None
    assert_same(d.model, snap)


def test_control_job_that_deep_copies_the_unet_is_caught(webui_double, tmp_path):
    """The mid-job check must be able to fail: a backend over a deep copy leaves copies of every weight."""
    from lora_trainer.config import toy_config
    from lora_trainer.training.ldm_backend import LdmBackend
    from lora_trainer.training.loop import Callbacks, train
    from lora_trainer.training.tiny import tiny_dataset

    d = webui_double
    tiny_dataset(tmp_path / "data", n=2, repeats=2, name="tok")
    before = _weight_shaped_tensors(d.model)   # taken before the copy: the copy is what must be caught
    control = LdmBackend(copy.deepcopy(d.model))
    seen = {}
    stop = threading.Event()

    def at_progress(p):
        if p.phase == "train" and "copies" not in seen:
            seen["copies"] = foreign_weight_copies(d.model, before)
            stop.set()

    train(control, tmp_path / "data", toy_config(optimizer="AdamW", epochs=1, batch_size=1),
          tmp_path / "out", callbacks=Callbacks(on_progress=at_progress), should_stop=stop.is_set)
    n_weights = sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in d.model.model.diffusion_model.modules())
    assert len(seen["copies"]) >= n_weights


def test_model_change_and_unload_stop_a_running_job(webui_double):
    from lora_trainer.host import webui

    d = webui_double
    service = webui.get_service()
    name = project(service)
    snap = snapshot(d.model)
    started = threading.Event()
    service.runner.subscribe(lambda j, e, data: started.set() if data.get("phase") == "train" else None)
    job = service.train(name, {**TRAIN, "epochs": 100})
    assert started.wait(300)
    assert webui.stop_running_job("test") == job  # what on_model_loaded does; waits for the job
    assert service.runner.get(job)["status"] == "cancelled"
    assert_same(d.model, snap)
    webui.on_script_unloaded()
    assert webui._service is None and not service.runner._thread.is_alive()
    from lora_trainer.tagging.registry import tagger_names

    assert "deepbooru" not in tagger_names()
    assert webui.get_service() is not service  # a fresh one after Reload UI


# ---------------------------------------------------------------------------------------------- the builtin Lora

def test_builtin_lora_left_merged_by_a_generation_is_restored_before_training(webui_double):
    from lora_trainer.host.backend import HostBackend

    d = webui_double
    snap = snapshot(d.model)
    random_lora_file(d, d.lora_dir / "merged.safetensors", "merged")
    d.networks.list_available_networks()
    p = d.m("processing").StableDiffusionProcessingTxt2Img(prompt="a cat <lora:merged:1>", steps=2, width=32,
                                                            height=32, seed=1)
    d.m("processing").process_images(p)  # a user's generation: the LoRA stays loaded and merged
    assert d.networks.loaded_networks
    q = d.model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    assert digest(q.weight) != snap[0][key][2]  # merged into the base weight
    HostBackend()  # what every job does first
    assert d.networks.loaded_networks == []
    assert_same(d.model, snap)
    assert all(getattr(m, "network_weights_backup", None) is None for m in d.model.modules())  # CPU copies freed


def test_host_txt2img_detaches_our_adapters_and_unloads_after(webui_double, tmp_path):
    from lora_trainer.host import webui
    from lora_trainer.training.saving import read_lora

    d = webui_double
    snap = snapshot(d.model)
    lora = tmp_path / "mine.safetensors"
    net = random_lora_file(d, lora, "mine")
    net.attach()  # as during training, when a sample image is made
    attached = sum("forward" in m.__dict__ for m in d.model.modules())
    assert attached == len(net)
    gen = webui.HostGenerator(sampler_name="Euler")
    with_lora = gen.generate(["a cat"], seeds=[7], steps=3, size=32, lora=str(lora), weight=0.8)
    without = gen.generate(["a cat"], seeds=[7], steps=3, size=32)
    calls = d.m("processing").calls
    assert calls[-2]["foreign_forwards"] == 0 and calls[-1]["foreign_forwards"] == 0
    assert calls[-2]["prompt"].startswith("a cat <lora:mine-") and calls[-2]["prompt"].endswith(":0.8>")
    assert calls[-2]["sampler_name"] == "Euler" and calls[-1]["prompt"] == "a cat"
    assert calls[-2]["scheduler"] == "Automatic"  # else 1.9+ logs an "autocorrection" of None each time
    assert sum("forward" in m.__dict__ for m in d.model.modules()) == attached  # re-attached afterwards
    net.detach()
    assert d.networks.loaded_networks == []
    assert_same(d.model, snap)
    assert with_lora[0].tobytes() != without[0].tobytes()
    assert "Lora hashes" in with_lora[0].info["parameters"] and gen.infotexts[0] == with_lora[0].info["parameters"]
    # the WebUI (without txt2img's scripts) writes the prompt stripped of <lora:…>; the infotext gets it back
    assert with_lora[0].info["parameters"].split("\n")[0] == calls[-2]["prompt"]
    assert without[0].info["parameters"].split("\n")[0] == "a cat"
    staged = next((d.lora_dir / "lora_trainer_tests").glob("mine-*.safetensors"))
    assert read_lora(staged)[1]["ss_output_name"] == staged.stem  # alias == name: no alias collisions


def test_host_samplers_are_the_webuis_visible_ones(webui_double):
    from lora_trainer.errors import UserError
    from lora_trainer.host import webui

    d = webui_double
    sd_samplers = d.m("sd_samplers")
    models = webui.HostModels()
    assert models.samplers()[0] == "Euler a"  # the setting's default first
    assert sorted(models.samplers()) == sorted(s.name for s in sd_samplers.all_samplers)
    d.shared.opts.data["lora_trainer_test_sampler"] = "DDIM"
    sd_samplers.samplers_hidden.add("UniPC")
    try:
        assert models.samplers()[0] == "DDIM" and "UniPC" not in models.samplers()
        webui.HostGenerator().generate(["a"], seeds=[1], steps=2, size=32, sampler="DPM++ 2M")
        assert d.m("processing").calls[-1]["sampler_name"] == "DPM++ 2M"
        webui.HostGenerator().generate(["a"], seeds=[1], steps=2, size=32)
        assert d.m("processing").calls[-1]["sampler_name"] == "DDIM"  # none given: the setting
        with pytest.raises(UserError, match="no sampler 'UniPC'"):  # hidden in the WebUI's settings
            webui.HostGenerator().generate(["a"], seeds=[1], steps=2, size=32, sampler="UniPC")
    finally:
        sd_samplers.samplers_hidden.discard("UniPC")
        d.shared.opts.data.pop("lora_trainer_test_sampler", None)


def test_state_fields_survive_a_host_generation(webui_double, tmp_path):
    from lora_trainer.host import webui

    d = webui_double
    d.state.job, d.state.job_count, d.state.sampling_steps, d.state.textinfo = "lora_trainer:generate", 1, 9, "x"
    webui.HostGenerator().generate(["a"], seeds=[1, 2], steps=2, size=32)
    assert (d.state.job, d.state.job_count, d.state.sampling_steps, d.state.textinfo) == \
        ("lora_trainer:generate", 1, 9, "x")


def test_publish_unique_names_sidecar_and_setting(webui_double, tmp_path):
    from lora_trainer.host import webui
    from lora_trainer.training.saving import read_lora, write_sidecar

    d = webui_double
    a, b = tmp_path / "a" / "amy.safetensors", tmp_path / "b" / "amy.safetensors"
    a.parent.mkdir(), b.parent.mkdir()
    random_lora_file(d, a, "amy", scale=0.1)
    random_lora_file(d, b, "amy", scale=0.2)
    write_sidecar(a, family="sd1", trigger="amy")
    first = webui.publish(a, "amy")
    assert first == d.lora_dir / "amy.safetensors" and (d.lora_dir / "amy.json").is_file()
    assert webui.publish(a, "amy") == first  # same weights: reused, never re-written
    (d.lora_dir / "sub").mkdir()
    (d.lora_dir / "sub" / "amy-2.pt").write_bytes(b"x")  # a name taken anywhere in the folder tree
    second = webui.publish(b, "amy")
    assert second == d.lora_dir / "amy-3.safetensors"
    assert read_lora(second)[1]["ss_output_name"] == "amy-3"
    assert {"amy", "amy-3"} <= set(d.networks.available_networks)
    # the copies are as readable as files the WebUI writes itself (not mkstemp's 0600): umask 022 -> 0644
    import os

    from lora_trainer.workspace import FILE_MODE

    mask = os.umask(0o022)
    os.umask(mask)
    assert FILE_MODE == 0o666 & ~mask
    for f in (first, second, d.lora_dir / "amy.json"):
        assert f.stat().st_mode & 0o777 == FILE_MODE, (f.name, oct(f.stat().st_mode))
    d.shared.opts.data["lora_trainer_publish"] = False
    assert webui.publish(b, "other") is None


# ---------------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("case, words", [
    ("lowvram", "--lowvram"), ("fp8", "fp8"), ("sdxl", "SDXL"), ("sd3", "SD3"), ("unet_override", "SD Unet"),
    ("inpainting", "inpainting"), ("forge2", "Forge 2"), ("inference_tensors", "Forge 2"),
    ("no_model", "no checkpoint"),
])
def test_refusals_are_clear_user_errors(webui_double, monkeypatch, case, words):
    import types

    from lora_trainer.host import backend as hb

    d = webui_double
    model = d.model
    if case == "lowvram":
        d.flags(lowvram=True)
    elif case == "fp8":
        monkeypatch.setattr(d.m("devices"), "fp8", True)
    elif case == "sdxl":
        model.is_sdxl = True
    elif case == "sd3":
        model.is_sd3 = True
    elif case == "unet_override":
        monkeypatch.setattr(d.m("sd_unet"), "current_unet", object())
    elif case == "inpainting":
        monkeypatch.setattr(model.model, "conditioning_key", "hybrid")
    elif case == "forge2":
        monkeypatch.setattr(hb, "host_kind", lambda: "forge2")
    elif case == "inference_tensors":
        with torch.inference_mode():
            unet = nn.Linear(2, 2)
        model = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=unet), cond_stage_model=object())
    snap = snapshot(d.model)
    if case == "no_model":
        model = None
        d.shared.sd_model = None
    with pytest.raises(UserError) as err:
        hb.HostBackend(model)
    assert words in str(err.value) and err.value.hint
    assert_same(d.model, snap)


def test_refusal_reaches_the_job_as_a_user_error(webui_double):
    from lora_trainer.host import webui

    d = webui_double
    d.flags(lowvram=True)
    service = webui.get_service()
    st = service.runner.wait(service.train(project(service), TRAIN), timeout=120)
    assert st["status"] == "failed" and st["error"]["kind"] == "user" and "--lowvram" in st["error"]["message"]
    assert webui.host_info()["can_train"] is False


def test_medvram_trains_and_host_info_warns(webui_double):
    from lora_trainer.host import webui

    d = webui_double
    d.flags(medvram=True)
    be = webui.HostModels().backend()
    assert be.medvram and be.device == d.m("devices").device and be.dtype == torch.float32
    assert any("medvram" in w for w in webui.host_info()["warnings"])


# ---------------------------------------------------------------------------------------------- host_info

def test_host_info(webui_double, monkeypatch):
    from lora_trainer import install_plan
    from lora_trainer.host import backend as hb
    from lora_trainer.host import webui

    d = webui_double
    info = webui.host_info()
    assert info["host"] == "WebUI v1.10.1" and info["host_kind"] == "a1111" and info["family"] == "sd1"
    assert info["lang"] is None
    assert info["model"] == {"loaded": True, "family": "sd1", "name": "tiny", "title": "tiny.safetensors [0123456789]"}
    assert info["can_train"] and info["cannot_train_reason"] == "" and info["lora_dir"] == str(d.lora_dir)
    assert info["workspace"] == str(d.root / "lora_trainer") and info["api_enabled"] is False
    d.model.is_sd2 = True
    monkeypatch.setattr(install_plan, "disabled_features", lambda ext_dir=None: {"rembg": "pip failed"})
    info = webui.host_info()
    assert info["model"]["family"] == "sd2" and any("SD2: UNet only" in w for w in info["warnings"])
    assert info["disabled_features"] == {"rembg": "pip failed"}  # the tab lists them
    d.shared.opts.data["localization"] = "zh_CN"
    assert webui.host_info()["lang"] == "zh_CN"
    assert webui.HostModels().preset() == {"train_text_encoder": False}
    monkeypatch.setattr(hb, "host_kind", lambda: "forge2")
    monkeypatch.setattr(webui, "host_kind", lambda: "forge2")
    info = webui.host_info()
    assert not info["can_train"] and "Forge 2" in info["cannot_train_reason"]
    assert info["warnings"][0].startswith("Training is off: Forge 2")
    d.m("sd_models").model_data.sd_model = None
    monkeypatch.setattr(webui, "host_kind", lambda: "a1111")
    monkeypatch.setattr(hb, "host_kind", lambda: "a1111")
    info = webui.host_info()
    assert info["model"]["loaded"] is False and info["can_train"]  # the job loads (and judges) it


# ---------------------------------------------------------------------------------------------- taggers

def test_interrogators_fail_fast_without_their_models(webui_double):
    from lora_trainer.host import webui
    from lora_trainer.tagging.registry import describe_taggers, get_tagger

    d = webui_double
    webui.get_service()  # registers the host taggers
    with pytest.raises(UserError, match="torch_deepdanbooru"):
        get_tagger("deepbooru")
    with pytest.raises(UserError) as err:
        get_tagger("clip")
    for what in ("BLIP model", "BLIP repository", "ViT-L-14.pt", "bert-base-uncased", "category lists"):
        assert what in str(err.value)
    listed = {t["name"]: t for t in describe_taggers()}
    assert listed["deepbooru"]["available"] is False and listed["clip"]["available"] is False
    assert d.m("deepbooru").model.model is None  # nothing was loaded (nor downloaded)


def test_wd14_looks_in_the_webuis_models_folder_first(webui_double, monkeypatch, tmp_path):
    """In the WebUI a WD14 model goes in ``<models>/wd14`` (the message says so); one already in our cache
    folder is still found; after Reload UI the standalone default is back."""
    from lora_trainer.host import webui
    from lora_trainer.host.env import models_path
    from lora_trainer.tagging import wd14
    from lora_trainer.tagging.registry import get_tagger

    monkeypatch.setenv("LORA_TRAINER_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "models" / "wd14"
    webui.get_service()  # registers the host taggers
    host_dir = models_path() / "wd14"
    with pytest.raises(UserError, match=re.escape(str(host_dir))):
        get_tagger("wd14")
    cache.mkdir(parents=True)
    (cache / wd14.MODEL_FILE).write_bytes(b"x")
    assert wd14.WD14Tagger().model_dir == cache  # where an earlier install put it
    host_dir.mkdir(parents=True, exist_ok=True)
    try:
        (host_dir / wd14.MODEL_FILE).write_bytes(b"x")
        assert wd14.WD14Tagger().model_dir == host_dir
    finally:
        (host_dir / wd14.MODEL_FILE).unlink()
    webui.on_script_unloaded()
    assert wd14.HOST_MODEL_DIRS == [] and wd14.WD14Tagger().model_dir == cache


def test_deepbooru_tagger_gives_raw_scored_tags_and_restores_options(webui_double, monkeypatch):
    from PIL import Image

    from lora_trainer.host import webui
    from lora_trainer.tagging.registry import get_tagger

    d = webui_double
    d.add_interrogator_files(clip=False)
    webui.get_service()
    before = dict(d.shared.opts.data)
    tagger = get_tagger("deepbooru")
    red = Image.new("RGB", (40, 30), (250, 10, 10))
    [res] = tagger.tag([red], threshold=0.65)
    names = res.names()
    assert names[0] == "red_theme" and "solo_(focus)" in names and ":d" not in names  # 0.6 < threshold
    assert all(not t.startswith("rating:") for t in names) and "green_theme" not in names
    assert [s for _, s in res.tags] == sorted((s for _, s in res.tags), reverse=True)
    assert d.shared.opts.data == before and d.m("deepbooru").model.on_device is False


def test_clip_tagger_keeps_progress_and_interrupt(webui_double):
    from PIL import Image

    from lora_trainer.host import webui
    from lora_trainer.tagging.registry import get_tagger

    d = webui_double
    d.add_interrogator_files(deepbooru=False)
    monkey_bert = __import__("lora_trainer.host.taggers", fromlist=["x"])
    original = monkey_bert._bert_tokenizer_cached
    monkey_bert._bert_tokenizer_cached = lambda: True
    try:
        webui.get_service()
        tagger = get_tagger("clip")
        d.state.job, d.state.sampling_step, d.state.interrupted = "lora_trainer:tag", 3, True
        [res] = tagger.tag([Image.new("RGB", (32, 32))])
    finally:
        monkey_bert._bert_tokenizer_cached = original
    assert res.tags[0] == ("a picture of a square", 1.0) and len(res.tags) == 3
    assert d.state.job == "lora_trainer:tag" and d.state.sampling_step == 3 and d.state.interrupted
    assert d.shared.interrogator.calls == 1


# ---------------------------------------------------------------------------------------------- crop

def test_host_focal_crop_and_box(webui_double):
    import numpy as np
    from PIL import Image

    from lora_trainer.host import webui

    d = webui_double
    ac = d.m("textual_inversion.autocrop")
    arr = np.zeros((64, 96, 3), np.uint8)
    arr[20:40, 70:90] = 255  # the subject, on the right
    img = Image.fromarray(arr)
    out = webui.host_focal_crop(img, 32)
    # the whole subject (10x10 once scaled) is inside; a centre crop would cut it in half
    assert out.size == (32, 32) and (np.asarray(out)[..., 0] > 128).sum() >= 90
    assert ac.crop_calls[-1].dnn_model_path is None and ac.download_calls == 0  # Haar fallback, no download
    left, top, right, bottom = webui.host_focal_box(img)
    assert (right - left, bottom - top) == (64, 64) and left == 32 and left <= 70 and right >= 90
    yunet = __import__("pathlib").Path(ac.model_file_path)
    yunet.parent.mkdir(parents=True, exist_ok=True)
    yunet.write_bytes(b"onnx")
    webui.host_focal_crop(img, 32)
    assert ac.crop_calls[-1].dnn_model_path == str(yunet)


def test_only_the_host_package_imports_webui_modules():
    import re
    from pathlib import Path

    import lora_trainer

    root = Path(lora_trainer.__file__).parent
    pattern = re.compile(r"^\s*(from\s+(modules|networks)(\.|\s)|import\s+(modules|networks)\b)"
                         r"|import_module\(\s*f?[\"']modules\.|sys\.modules\.get\([\"']networks", re.M)
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.parent.name != "host" and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("info, expected", [
    # what WebUI 1.10 writes without txt2img's scripts: the extra network cut out, its space left
    ("shp, red circle \nSteps: 3, Sampler: Euler a", "shp, red circle <lora:a-1:1>\nSteps: 3, Sampler: Euler a"),
    ("shp, red circle <lora:a-1:1>\nSteps: 3", "shp, red circle <lora:a-1:1>\nSteps: 3"),  # already there
    ("something else\nSteps: 3", "something else\nSteps: 3"),  # not the prompt we sent: left alone
])
def test_infotext_keeps_the_lora_tag(info, expected):
    from lora_trainer.host.generate import with_lora_tag

    assert with_lora_tag(info, "shp, red circle", "shp, red circle <lora:a-1:1>") == expected
