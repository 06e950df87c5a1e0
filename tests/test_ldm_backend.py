"""LdmBackend on the real ldm classes the WebUI runs, and the WebUI-style LoRA loader used to check our files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import needs_diffusers
from ldm_models import WebUIStyleCondStage, sd15_clip_text_model_meta, sd15_ldm_unet_meta, tiny_latent_diffusion
from lora_trainer.errors import UserError
from lora_trainer.training.backend import ModelBackend
from lora_trainer.training.ldm_backend import LdmBackend, clip_te_lora_targets, ldm_unet_lora_targets
from lora_trainer.training.names import webui_compvis_name
from webui_lora_loader import load_kohya_lora, webui_layer_mapping

TRANSFORMER_PARTS = ["proj_in", "proj_out"] + [f"transformer_blocks_0_{a}_{p}" for a in ("attn1", "attn2")
                                               for p in ("to_q", "to_k", "to_v", "to_out_0")] + \
    ["transformer_blocks_0_ff_net_0_proj", "transformer_blocks_0_ff_net_2"]
SD15_TRANSFORMERS = [f"down_blocks_{i}_attentions_{j}" for i in range(3) for j in range(2)] + \
    ["mid_block_attentions_0"] + [f"up_blocks_{i}_attentions_{j}" for i in range(1, 4) for j in range(3)]
SD15_UNET_NAMES = {f"lora_unet_{t}_{p}" for t in SD15_TRANSFORMERS for p in TRANSFORMER_PARTS}
SD15_TE_NAMES = {f"lora_te_text_model_encoder_layers_{n}_{p}" for n in range(12)
                 for p in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj",
                           "mlp_fc1", "mlp_fc2")}


# --- SD1.5-shaped models on the meta device ----------------------------------------------------------------------

def test_sd15_ldm_unet_has_kohyas_192_targets_and_278_with_conv():
    unet = sd15_ldm_unet_meta()
    targets = ldm_unet_lora_targets(unet)
    assert len(targets) == 192 and set(targets) == SD15_UNET_NAMES
    names = list(targets)
    assert names[0] == "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert names[-1] == "lora_unet_up_blocks_3_attentions_2_proj_out"
    ldm_names = {id(m): p for p, m in unet.named_modules()}
    assert ldm_names[id(targets["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"])] == \
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q"
    assert ldm_names[id(targets["lora_unet_up_blocks_1_attentions_0_proj_out"])] == "output_blocks.3.1.proj_out"
    assert isinstance(targets["lora_unet_mid_block_attentions_0_proj_in"], nn.Conv2d)  # 1x1 in SD1

    locon = ldm_unet_lora_targets(unet, conv=True)
    assert len(locon) == 278 and set(targets) <= set(locon)
    assert ldm_names[id(locon["lora_unet_up_blocks_2_upsamplers_0_conv"])] == "output_blocks.8.2.conv"
    assert ldm_names[id(locon["lora_unet_down_blocks_1_downsamplers_0_conv"])] == "input_blocks.6.0.op"
    assert ldm_names[id(locon["lora_unet_up_blocks_0_resnets_2_conv_shortcut"])] == "output_blocks.2.0.skip_connection"
    assert not any("conv_in" in n or "conv_out" in n or "time_embedding" in n for n in locon)  # kohya's LoCon set


def test_sd15_text_encoder_has_72_targets_with_text_model_names():
    te = sd15_clip_text_model_meta()
    targets = clip_te_lora_targets(te)
    assert len(targets) == 72 and set(targets) == SD15_TE_NAMES
    paths = {id(m): p for p, m in te.named_modules()}
    q = paths[id(targets["lora_te_text_model_encoder_layers_0_self_attn_q_proj"])]
    # transformers 4.x keeps text_model., 5.6+ flattens it: the module paths differ, kohya names do not.
    assert q == ("text_model.encoder.layers.0.self_attn.q_proj" if hasattr(te, "text_model")
                 else "encoder.layers.0.self_attn.q_proj")


def _diffusers_kohya_targets(unet: nn.Module, conv: bool) -> set[str]:
    """kohya's selection written against diffusers class names (the test's own, independent of the backends)."""
    blocks = {"Transformer2DModel"} | ({"ResnetBlock2D", "Downsample2D", "Upsample2D"} if conv else set())
    out = set()
    for path, block in unet.named_modules():
        if type(block).__name__ in blocks:
            for sub, m in block.named_modules():
                if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and (conv or m.kernel_size == (1, 1))):
                    out.add("lora_unet_" + f"{path}.{sub}".replace(".", "_"))
    return out


@needs_diffusers
def test_ldm_names_equal_diffusers_names_on_sd15():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    ldm_unet = sd15_ldm_unet_meta()
    assert set(ldm_unet_lora_targets(ldm_unet)) == _diffusers_kohya_targets(unet, conv=False)
    assert set(ldm_unet_lora_targets(ldm_unet, conv=True)) == _diffusers_kohya_targets(unet, conv=True)


# --- the tiny real LatentDiffusion --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    return tiny_latent_diffusion(seed=0)


@pytest.fixture()
def backend(model):
    yield LdmBackend(model)
    for p in model.parameters():
        p.grad = None


def test_backend_attributes(model, backend):
    assert isinstance(backend, ModelBackend)
    assert (backend.family, backend.prediction_type, backend.te_trainable) == ("sd1", "epsilon", True)
    assert backend.device == torch.device("cpu") and backend.dtype == torch.float32
    mods = backend.modules()
    assert mods["unet"] is model.model.diffusion_model
    assert mods["te"] is model.cond_stage_model.wrapped.transformer
    assert LdmBackend(model, name="tiny").name == "tiny"


def test_alphas_cumprod_is_float32_and_ignores_the_live_buffer(model, backend, monkeypatch):
    a = backend.alphas_cumprod()
    assert a.dtype == torch.float32 and a.shape == (1000,)
    torch.testing.assert_close(a, model.alphas_cumprod, rtol=0, atol=1e-6)
    monkeypatch.setattr(model, "alphas_cumprod", model.alphas_cumprod.half().float())  # the WebUI's fp16 option
    assert torch.equal(backend.alphas_cumprod(), a)
    original = torch.linspace(0.99, 0.01, 1000, dtype=torch.float64)
    monkeypatch.setattr(model, "alphas_cumprod_original", original, raising=False)
    got = backend.alphas_cumprod()
    assert got.dtype == torch.float32 and torch.equal(got, original.float())


def test_prediction_type_and_family(model, monkeypatch):
    monkeypatch.setattr(model, "parameterization", "v")
    assert (LdmBackend(model).prediction_type, LdmBackend(model).family) == ("v_prediction", "sd1")

    class OpenClipLike(nn.Module):  # FrozenOpenCLIPEmbedder keeps open_clip in .model (transformer.resblocks)
        def __init__(self):
            super().__init__()
            self.model = nn.Module()
            self.model.transformer = nn.Module()
            self.model.transformer.resblocks = nn.ModuleList([nn.MultiheadAttention(8, 2)])

    clip = model.cond_stage_model  # (monkeypatch cannot restore an nn.Module child: swap by hand)
    model.cond_stage_model = WebUIStyleCondStage(OpenClipLike())
    try:
        b = LdmBackend(model)
        assert (b.family, b.prediction_type, b.te_trainable) == ("sd2-v", "v_prediction", False)
        assert b.lora_targets("te") == {} and b.modules()["te"] is model.cond_stage_model.wrapped.model
        monkeypatch.setattr(model, "parameterization", "eps")
        assert LdmBackend(model).family == "sd2"
    finally:
        model.cond_stage_model = clip
    monkeypatch.setattr(model, "parameterization", "x0")
    with pytest.raises(UserError):
        LdmBackend(model)


def test_sdxl_like_models_are_refused():
    sgm_like = nn.Module()
    sgm_like.conditioner = nn.Module()
    with pytest.raises(UserError):
        LdmBackend(sgm_like)


def test_encode_images_gives_scaled_latents_without_grad(model, backend):
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.manual_seed(5)
    z = backend.encode_images(pixels)
    assert z.shape == (2, 4, 16, 16) and not z.requires_grad
    posterior = model.first_stage_model.encode(pixels)
    torch.manual_seed(5)
    expected = 0.18215 * posterior.sample()
    torch.testing.assert_close(z, expected.detach())


def test_encode_text_shape_and_grad_to_text_encoder(model, backend):
    te = backend.modules()["te"]
    targets = backend.lora_targets("te")
    assert len(targets) == 12  # 2 layers x (q, k, v, out, fc1, fc2)
    cond = backend.encode_text(("a photo of a cat", "a dog"))
    assert cond.shape == (2, 77, 32) and not cond.requires_grad  # frozen, as ldm's FrozenCLIPEmbedder is
    assert not torch.equal(cond[0], cond[1])
    flags = [p.requires_grad for p in te.parameters()]
    try:
        for m in targets.values():
            m.weight.requires_grad_(True)
        cond = backend.encode_text(["a photo of a cat", "a dog"])
        cond.square().mean().backward()
        for name, m in targets.items():
            assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0, name
    finally:
        for p, flag in zip(te.parameters(), flags):
            p.requires_grad_(flag)


def test_denoise_shape_and_backward_reaches_every_unet_target(model, backend):
    targets = backend.lora_targets("unet", conv=True)
    assert len(backend.lora_targets("unet")) == 6 * 12  # 2 down + 1 mid + 3 up transformers on the tiny model
    z = backend.encode_images(torch.rand(2, 3, 16, 16) * 2 - 1)
    cond = backend.encode_text(["a", "b"])
    pred = backend.denoise(z, torch.tensor([10, 900]), cond)
    assert pred.shape == z.shape and torch.isfinite(pred).all()
    pred.square().mean().backward()  # UNet weights keep requires_grad=True, as on the WebUI
    for name, m in targets.items():
        assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0, name


def test_every_kohya_name_lands_on_its_module_in_webui_naming(model, backend):
    mapping = webui_layer_mapping(model)
    targets = {**backend.lora_targets("unet", conv=True), **backend.lora_targets("te")}
    for kohya, module in targets.items():
        assert mapping.get(webui_compvis_name(kohya)) is module, kohya
    te = model.cond_stage_model.wrapped.transformer
    if hasattr(te, "text_model"):  # transformers 4.x, the WebUI's: the names are there with no help
        raw = {n.replace(".", "_") for n, _ in model.cond_stage_model.wrapped.named_modules()}
        assert "transformer_text_model_encoder_layers_1_mlp_fc2" in raw


# --- the WebUI-style loader ---------------------------------------------------------------------------------------

def _expected_delta(up: torch.Tensor, down: torch.Tensor, shape) -> torch.Tensor:
    if len(shape) == 2:
        return up @ down
    return torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down)


def _handmade_lora(targets: dict, rank: int = 2, alpha: float = 1.0, seed: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, m in targets.items():
        w = m.weight
        if w.dim() == 2:
            down, up = torch.randn(rank, w.shape[1], generator=g), torch.randn(w.shape[0], rank, generator=g)
        else:
            down = torch.randn(rank, w.shape[1], *w.shape[2:], generator=g)
            up = torch.randn(w.shape[0], rank, 1, 1, generator=g)
        sd[f"{name}.lora_down.weight"] = down * 0.1
        sd[f"{name}.lora_up.weight"] = up * 0.1
        sd[f"{name}.alpha"] = torch.tensor(alpha)
    return sd


def test_loader_merges_every_module_into_a_copy_and_changes_the_output(model, backend, tmp_path):
    from safetensors.torch import save_file

    targets = {**backend.lora_targets("unet", conv=True), **backend.lora_targets("te")}
    sd = _handmade_lora(targets, rank=2, alpha=1.0)
    sd["lora_unet_no_such_block_proj_in.lora_down.weight"] = torch.zeros(2, 4)
    path = tmp_path / "hand.safetensors"
    save_file(sd, str(path))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params_before = [p for p in model.parameters()]

    merged, matched, unmatched = load_kohya_lora(model, path, multiplier=0.8)
    assert matched == len(targets)
    assert unmatched == ["lora_unet_no_such_block_proj_in.lora_down.weight"]
    assert merged is not model
    after = model.state_dict()  # the original: same objects, bit-identical
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(a is b for a, b in zip(params_before, model.parameters()))

    merged_modules = {**LdmBackend(merged).lora_targets("unet", conv=True), **LdmBackend(merged).lora_targets("te")}
    for name, m in targets.items():
        up, down = sd[f"{name}.lora_up.weight"], sd[f"{name}.lora_down.weight"]
        expected = _expected_delta(up, down, m.weight.shape) * (1.0 / 2) * 0.8
        torch.testing.assert_close(merged_modules[name].weight - m.weight, expected, rtol=1e-4, atol=1e-6)

    z = backend.encode_images(torch.rand(1, 3, 16, 16) * 2 - 1)
    t = torch.tensor([300])
    with torch.no_grad():
        cond, cond_merged = backend.encode_text(["a cat"]), LdmBackend(merged).encode_text(["a cat"])
        assert (cond - cond_merged).abs().max() > 1e-4
        out, out_merged = backend.denoise(z, t, cond), LdmBackend(merged).denoise(z, t, cond)
        assert (out - out_merged).abs().max() > 1e-3


def test_loader_multipliers_split_text_encoder_and_unet(model, backend, tmp_path):
    from safetensors.torch import save_file

    unet_name = "lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_k"
    te_name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    targets = {n: m for n, m in {**backend.lora_targets("unet"), **backend.lora_targets("te")}.items()
               if n in (unet_name, te_name)}
    save_file(_handmade_lora(targets, rank=4, alpha=2.0), str(tmp_path / "two.safetensors"))
    merged, matched, unmatched = load_kohya_lora(model, tmp_path / "two.safetensors", te_multiplier=0.0,
                                                 unet_multiplier=1.0)
    assert (matched, unmatched) == (2, [])
    m_unet = LdmBackend(merged).lora_targets("unet")[unet_name]
    m_te = LdmBackend(merged).lora_targets("te")[te_name]
    assert torch.equal(m_te.weight, targets[te_name].weight)
    assert not torch.equal(m_unet.weight, targets[unet_name].weight)
