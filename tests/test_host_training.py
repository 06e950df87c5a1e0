"""Training through the ldm backend on a real tiny ``LatentDiffusion`` — the classes the WebUI runs.

Runs in both CI profiles; in the WebUI 1.10 host profile (torch 2.1.2, transformers 4.30.2, no diffusers)
it is the proof that the core trains there: the file is saved, reloaded into a fresh copy of the model by a
loader written from the WebUI Lora loader's documented key mapping, changes the model's output, and after
the job every base parameter is the same object with bit-identical values.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def ldm_model():
    from ldm_models import tiny_latent_diffusion

    return tiny_latent_diffusion(seed=0)


def _snapshot(model):
    return {n: (p, p.data_ptr(), p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}, \
        [(n, type(m).__name__, "forward" in m.__dict__) for n, m in model.named_modules()]


def _assert_same(model, snap):
    params, tree = snap
    now = dict(model.named_parameters())
    assert now.keys() == params.keys()
    for n, (p, ptr, val, rg) in params.items():
        assert now[n] is p and p.data_ptr() == ptr and torch.equal(p.detach(), val) and p.requires_grad == rg, n
    assert [(n, type(m).__name__, "forward" in m.__dict__) for n, m in model.named_modules()] == tree


def test_train_on_ldm_save_reload_with_webui_loader(ldm_model, tmp_path):
    from ldm_models import import_ldm  # noqa: F401 - ensures ldm is importable
    from webui_lora_loader import load_kohya_lora

    from lora_trainer.config import toy_config
    from lora_trainer.training.ldm_backend import LdmBackend
    from lora_trainer.training.loop import train
    from lora_trainer.training.saving import read_lora
    from lora_trainer.training.tiny import tiny_dataset

    tiny_dataset(tmp_path / "data", n=2, repeats=2, name="host")
    be = LdmBackend(ldm_model, name="tiny-ldm")
    snap = _snapshot(ldm_model)
    hooks = []
    attn = ldm_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1
    h = attn.register_forward_hook(lambda *a: hooks.append(1))
    try:
        cfg = toy_config(optimizer="AdamW8bit", epochs=1, batch_size=2, unet_lr=1e-2, save_precision="fp32",
                         save_fractions=[], sync_every=1)
        res = train(be, tmp_path / "data", cfg, tmp_path / "out")
    finally:
        h.remove()
    assert res.steps == 2 and res.output is not None and hooks  # the host's attention ran during training
    assert res.optimizer in ("AdamW8bit", "AdamW")
    _assert_same(ldm_model, snap)
    tensors, md = read_lora(res.output)
    n_modules = len({k.split(".")[0] for k in tensors})
    assert n_modules == len(be.lora_targets("unet")) + len(be.lora_targets("te"))
    assert md["ss_output_name"] == "host" and md["ss_sd_model_name"] == "tiny-ldm"

    loaded, matched, unmatched = load_kohya_lora(ldm_model, res.output)
    assert matched == n_modules and unmatched == []
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    t = torch.tensor([500])
    with torch.no_grad():
        c0 = ldm_model.get_learned_conditioning(["tok, red square"])
        c1 = loaded.get_learned_conditioning(["tok, red square"])
        base = ldm_model.apply_model(x, t, c0)
        with_lora = loaded.apply_model(x, t, c1)
    assert (with_lora - base).abs().max() > 1e-4
    _assert_same(ldm_model, snap)


def test_failure_inside_a_step_restores_the_host_model(ldm_model, tmp_path):
    from lora_trainer.config import toy_config
    from lora_trainer.training.ldm_backend import LdmBackend
    from lora_trainer.training.loop import train
    from lora_trainer.training.tiny import tiny_dataset

    tiny_dataset(tmp_path / "data", n=2, repeats=2, name="host")
    be = LdmBackend(ldm_model)
    snap = _snapshot(ldm_model)
    calls = {"n": 0}
    real = be.denoise

    def failing(*a):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*a)

    be.denoise = failing
    with pytest.raises(RuntimeError, match="out of memory"):
        train(be, tmp_path / "data", toy_config(optimizer="AdamW", epochs=2, batch_size=1), tmp_path / "out")
    _assert_same(ldm_model, snap)
