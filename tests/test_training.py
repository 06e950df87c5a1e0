"""The training core over BOTH backends (a tiny diffusers model and a real tiny ldm LatentDiffusion, the
WebUI's classes): it learns, leaves the base model untouched, saves files loaders read, stops on NaN without
writing it, and saves what it has when cancelled."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import HAS_DIFFUSERS


@pytest.fixture(params=["diffusers", "ldm"])
def make_backend(request):
    """A factory of backends over a shared tiny model of the given kind."""
    if request.param == "diffusers":
        if not HAS_DIFFUSERS:
            pytest.skip("needs diffusers: the WebUI 1.10 host profile has none (INTERFACES.md §6)")
        from tiny_sd import tiny_backend

        return tiny_backend
    from ldm_models import tiny_latent_diffusion

    from lora_trainer.training.ldm_backend import LdmBackend

    model = _ldm_model(tiny_latent_diffusion)
    return lambda: LdmBackend(model, name="tiny-ldm")


_LDM = {}


def _ldm_model(build):
    if "m" not in _LDM:
        _LDM["m"] = build(seed=0)
    return _LDM["m"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from lora_trainer.training.tiny import tiny_dataset

    root = tmp_path_factory.mktemp("data")
    tiny_dataset(root, n=4, repeats=2)
    return root


def _cfg(**kw):
    from lora_trainer.config import toy_config

    base = dict(optimizer="AdamW", epochs=1, batch_size=2, save_fractions=[], sync_every=1)
    base.update(kw)
    return toy_config(**base)


def _eval_loss(backend, net, latents, captions, seed=0):
    """MSE of the noise prediction on a fixed set of (noise, t) draws."""
    from lora_trainer.training.loop import add_noise

    g = torch.Generator().manual_seed(seed)
    ac = backend.alphas_cumprod()
    total = 0.0
    with torch.no_grad(), net.applied():
        for _ in range(8):
            noise = torch.randn(latents.shape, generator=g)
            t = torch.randint(100, 900, (latents.shape[0],), generator=g)
            pred = backend.denoise(add_noise(latents, noise, ac[t]), t, backend.encode_text(captions))
            total += torch.nn.functional.mse_loss(pred, noise).item()
    return total / 8


def test_loss_goes_down_on_a_learnable_target(make_backend, data_dir, tmp_path):
    from lora_trainer.training import data as D
    from lora_trainer.training.loop import Trainer

    be = make_backend()
    scan = D.scan_dataset(data_dir, 1)
    cfg = _cfg(unet_lr=3e-3, epochs=6, rank=4, alpha=4)
    tr = Trainer(be, scan, cfg, tmp_path, name="t")
    tr._prepare_data()
    tr._prepare_network()
    latents = torch.stack(tr.latents)
    captions = [i.caption for i in scan.items]
    before = _eval_loss(be, tr.network, latents, captions)
    res = tr.run()
    after = _eval_loss(be, tr.network, latents, captions)
    assert res.steps == res.total_steps == 6 * 4 * 2 // 2
    assert after < 0.9 * before, (before, after)


def test_base_model_untouched_and_metadata_present(make_backend, data_dir, tmp_path):
    from tiny_sd import assert_base_unchanged, base_snapshot

    from lora_trainer.training.loop import train
    from lora_trainer.training.saving import read_lora

    be = make_backend()
    snap = base_snapshot(be)
    phone = data_dir / "2_tiny" / "IMG_9.HEIC"  # a photo training does not read: left out, and said so
    phone.write_bytes(b"x")
    try:
        res = train(be, data_dir, _cfg(name="Amy", trigger_word="amy", save_fractions=[0.5]), tmp_path)
    finally:
        phone.unlink()
    assert any("IMG_9.HEIC" in w and "prepare" in w for w in res.warnings), res.warnings
    assert_base_unchanged(be, snap)
    assert [p.name for p in res.saved] == ["Amy-step000002.safetensors", "Amy.safetensors"]
    tensors, md = read_lora(res.output)
    n_targets = len(be.lora_targets("unet")) + len(be.lora_targets("te"))
    assert len([k for k in tensors if k.endswith(".lora_down.weight")]) == n_targets
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" in tensors
    assert "lora_unet_down_blocks_0_attentions_0_proj_in.alpha" in tensors
    assert all(t.dtype == torch.float16 for t in tensors.values())
    for key in ("ss_output_name", "ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_base_model_version",
                "ss_v2", "ss_sd_model_name", "ss_resolution", "ss_clip_skip", "ss_tag_frequency", "ss_dataset_dirs",
                "ss_num_train_images", "ss_training_started_at", "ss_bucket_info", "sshs_model_hash",
                "modelspec.architecture", "modelspec.sai_model_spec", "ss_seed", "ss_optimizer", "ss_unet_lr"):
        assert key in md, key
    assert md["ss_output_name"] == "Amy" and md["ss_network_module"] == "networks.lora"
    assert md["ss_base_model_version"] == "sd_v1" and md["ss_v2"] == "False"
    assert md["modelspec.architecture"] == "stable-diffusion-v1/lora"
    import hashlib
    import json

    raw = res.output.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert md["sshs_model_hash"] == hashlib.sha256(raw[8 + n:]).hexdigest()
    assert json.loads(md["ss_tag_frequency"])["2_tiny"]["tok"] == 4
    side = json.loads(res.output.with_suffix(".json").read_text())
    assert side["activation text"] == "amy" and side["sd version"] == "SD1"


def test_cancel_saves_a_valid_file_and_no_temp_file(make_backend, data_dir, tmp_path):
    from tiny_sd import assert_base_unchanged, base_snapshot

    from lora_trainer.training.loop import Callbacks, train
    from lora_trainer.training.saving import read_lora
    from lora_trainer.workspace import leftover_temp_files

    be = make_backend()
    snap = base_snapshot(be)
    seen = []
    cb = Callbacks(on_progress=lambda p: seen.append(p) if p.phase == "train" else None)
    res = train(be, data_dir, _cfg(epochs=5), tmp_path, callbacks=cb, should_stop=lambda: len(seen) >= 3)
    assert res.cancelled and res.steps == 3 < res.total_steps
    tensors, md = read_lora(res.output)
    assert md["ss_steps"] == "3" and all(torch.isfinite(t).all() for t in tensors.values())
    assert leftover_temp_files(tmp_path) == []
    assert_base_unchanged(be, snap)


def test_nan_stops_the_run_and_nothing_non_finite_is_written(make_backend, data_dir, tmp_path):
    from tiny_sd import assert_base_unchanged, base_snapshot

    from lora_trainer.errors import NonFiniteLoss
    from lora_trainer.training.loop import train
    from lora_trainer.training.saving import read_lora

    be = make_backend()
    snap = base_snapshot(be)
    calls = {"n": 0}
    real = be.denoise

    def poisoned(x, t, c):
        calls["n"] += 1
        out = real(x, t, c)
        return out * float("nan") if calls["n"] >= 4 else out

    be.denoise = poisoned
    with pytest.raises(NonFiniteLoss) as e:
        train(be, data_dir, _cfg(epochs=5, sync_every=3, save_fractions=[0.1]), tmp_path)
    assert "learning rate" in e.value.hint
    assert calls["n"] <= 4 + 3  # stopped within sync_every steps of the first NaN
    for f in tmp_path.glob("*.safetensors"):
        tensors, _ = read_lora(f)
        assert all(bool(torch.isfinite(t.float()).all()) for t in tensors.values()), f
    assert not (tmp_path / "tiny.safetensors").exists()
    del be.denoise
    assert_base_unchanged(be, snap)


def test_nan_at_the_first_step_blames_the_model_not_the_lr(make_backend, data_dir, tmp_path):
    """A model whose denoise gives NaN from the start (fp32 on CPU): the message names the model, and the
    hint neither tells the user to lower the lr nor blames fp16 the run does not use."""
    from lora_trainer.errors import NonFiniteLoss
    from lora_trainer.training.loop import train

    be = make_backend()
    real = be.denoise
    be.denoise = lambda x, t, c: real(x, t, c) * float("nan")
    try:
        with pytest.raises(NonFiniteLoss) as e:
            train(be, data_dir, _cfg(epochs=5, sync_every=1), tmp_path)
    finally:
        del be.denoise
    msg, hint = e.value.message, e.value.hint
    assert "first step" in msg and be.name in msg and "gives NaN" in msg, msg
    assert "lower the learning rate" not in hint and "fp16" not in hint, hint
    assert "checkpoint" in hint and not list(tmp_path.glob("*.safetensors"))


def test_nan_advice_after_the_first_step_names_the_lr_and_fp16_only_in_fp16():
    from lora_trainer.training.loop import nan_advice

    msg, hint = nan_advice(float("nan"), 7, None, "m")
    assert "step 7" in msg and "lower the learning rate" in hint and "fp16" not in hint
    assert "fp16" in nan_advice(float("nan"), 7, torch.float16)[1]
    assert "fp16" in nan_advice(float("inf"), 1, torch.float16, "m")[1]  # step 1 in fp16: the overflow is named


def test_min_snr_weights_and_v_target():
    from lora_trainer.training.loop import snr_weights, v_target

    ac = torch.tensor([0.99, 0.5, 0.01])
    w = snr_weights(ac, 5.0, v_prediction=False)
    snr = ac / (1 - ac)
    assert torch.allclose(w, torch.minimum(snr, torch.tensor(5.0)) / snr)
    lat, noise = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    assert v_target(lat, noise, torch.tensor([0.36]))[0].item() == pytest.approx(-math.sqrt(0.64))


def test_gradient_checkpointing_gives_the_same_gradients_and_is_removed(make_backend, data_dir):
    from tiny_sd import assert_base_unchanged, base_snapshot

    from lora_trainer.training import data as D
    from lora_trainer.training.forecast import warm_trainer

    be = make_backend()
    snap = base_snapshot(be)
    scan = D.scan_dataset(data_dir, 1)
    grads = []
    for ckpt in (False, True):
        with warm_trainer(be, scan, _cfg(rank=4, alpha=4, gradient_checkpointing=ckpt)) as (tr, batch):
            assert len(batch) == 2
            tr._step(batch, accumulate=True)  # accumulating: the gradients are kept, no optimizer step
            grads.append([p.grad.clone() for p in tr.network.parameters()])
    assert all(g is not None for g in grads[0]) and any(g.abs().max() > 0 for g in grads[0])
    assert max((a - b).abs().max().item() for a, b in zip(*grads)) < 1e-5
    assert_base_unchanged(be, snap)  # ldm: no instance-level checkpoint wrapper is left in the module tree
    assert not getattr(be.unet, "is_gradient_checkpointing", False)  # diffusers: switched off again


def test_diffusers_gradient_checkpointing_switches_both_models_without_deprecation_warnings():
    """On and off for the UNet and the text encoder, through whichever name this transformers has
    (``activation_checkpointing_*`` in 5.x, whose old name warns; only ``gradient_checkpointing_*`` in 4.30)."""
    import warnings

    if not HAS_DIFFUSERS:
        pytest.skip("needs diffusers: the WebUI 1.10 host profile has none (INTERFACES.md §6)")
    from tiny_sd import tiny_backend

    be = tiny_backend()
    te_flag = "is_activation_checkpointing" if hasattr(be.text_encoder, "is_activation_checkpointing") \
        else "is_gradient_checkpointing"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        be.set_gradient_checkpointing(True)
        assert be.unet.is_gradient_checkpointing and getattr(be.text_encoder, te_flag)
        be.set_gradient_checkpointing(False)
        assert not be.unet.is_gradient_checkpointing and not getattr(be.text_encoder, te_flag)


def test_latent_disk_cache_lives_in_the_job_folder_and_skips_encoding(make_backend, data_dir, tmp_path):
    """``cache_latents_to_disk``: the first run writes one latent file per image into the job folder (never
    beside the images); a second run over the same job folder encodes nothing and trains to the same weights."""
    from safetensors.torch import load_file

    from lora_trainer.training import data as D
    from lora_trainer.training.loop import Trainer

    be = make_backend()
    calls = []
    encode = be.encode_images
    be.encode_images = lambda px: (calls.append(px.shape[0]), encode(px))[1]
    cfg = _cfg(cache_latents_to_disk=True, cache_latents=False, save_precision="fp32", name="disk")
    before = sorted(p.name for p in data_dir.rglob("*"))
    outs = []
    for run in range(2):
        calls.clear()
        res = Trainer(be, D.scan_dataset(data_dir, cfg.repeats), cfg, tmp_path / f"out{run}",
                      job_dir=tmp_path / "job").run()
        outs.append(load_file(str(res.output)))
        assert sum(calls) == (4 if run == 0 else 0), calls
    assert len(list((tmp_path / "job" / "latents").glob("*.safetensors"))) == 4
    assert sorted(p.name for p in data_dir.rglob("*")) == before, "nothing written to the source folder"
    assert outs[0].keys() == outs[1].keys()
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])
