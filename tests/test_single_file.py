"""Single-file checkpoints: our own configs match the real SD1.5/SD2 architectures, and an original-format
``.safetensors`` written from a real ldm model loads offline through diffusers with our config folder."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import needs_diffusers

pytestmark = needs_diffusers


def _strip(d):
    return {k: v for k, v in d.items() if not k.startswith("_")}


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_our_unet_config_matches_the_ldm_architecture(family):
    """Every ldm parameter maps (names.py) onto a diffusers parameter of our config with the same shape."""
    from diffusers import UNet2DConditionModel
    from ldm_models import sd15_ldm_unet_meta

    from lora_trainer.training import names
    from lora_trainer.training.model_loading import CONFIGS

    over = {} if family == "sd1" else dict(num_heads=-1, num_head_channels=64, context_dim=1024,
                                           use_linear_in_transformer=True)
    ldm = sd15_ldm_unet_meta(**over)
    with torch.device("meta"):
        ours = UNet2DConditionModel(**_strip(CONFIGS[family]["unet"]))
    theirs = {n: p.shape for n, p in ours.named_parameters()}
    mapped = {}
    for n, p in ldm.named_parameters():
        d = names.ldm_to_diffusers_unet(n, 2, 4)
        assert d is not None, n
        mapped[d] = p.shape
    assert mapped.keys() == theirs.keys()
    assert all(tuple(mapped[k]) == tuple(theirs[k]) for k in theirs)


def test_our_vae_and_text_encoder_configs_have_the_real_sizes():
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from lora_trainer.training.model_loading import _VAE, CONFIGS

    with torch.device("meta"):
        vae = AutoencoderKL(**{k: v for k, v in _strip(_VAE).items() if k != "scaling_factor"})
        te = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in CONFIGS["sd1"]["text_encoder"].items()
                                             if k not in ("architectures", "model_type", "torch_dtype")}))
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863      # SD's kl-f8 VAE
    assert sum(p.numel() for p in te.parameters()) == 123_060_480      # CLIP ViT-L/14 text model


def _tiny_config_dir(tmp_path):
    """Configs of the tiny ldm model's architecture, in our config-folder layout."""
    from lora_trainer.training.model_loading import CONFIGS, write_config_folder

    folder = write_config_folder(tmp_path / "cfg", "sd1", "epsilon")
    unet = {**CONFIGS["sd1"]["unet"], "block_out_channels": [32, 64], "layers_per_block": 2, "sample_size": 32,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
            "attention_head_dim": 4}
    vae = json.loads((folder / "vae/config.json").read_text())
    vae.update(block_out_channels=[32, 64], layers_per_block=1, down_block_types=["DownEncoderBlock2D"] * 2,
               up_block_types=["UpDecoderBlock2D"] * 2, sample_size=64)
    te = {**CONFIGS["sd1"]["text_encoder"], "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
          "num_attention_heads": 4, "projection_dim": 32}
    (folder / "unet/config.json").write_text(json.dumps(unet))
    (folder / "vae/config.json").write_text(json.dumps(vae))
    (folder / "text_encoder/config.json").write_text(json.dumps(te))
    return folder


def test_original_format_checkpoint_loads_offline_and_matches_the_ldm_model(tmp_path):
    from ldm_models import tiny_latent_diffusion
    from safetensors.torch import save_file

    from lora_trainer.training.model_loading import load_components

    ldm = tiny_latent_diffusion(seed=0)
    te = ldm.cond_stage_model.wrapped.transformer
    sd = {}
    for k, v in ldm.state_dict().items():
        if k.startswith("cond_stage_model."):
            continue
        sd[k] = v.contiguous()
    for k, v in te.state_dict().items():
        k = k if k.startswith("text_model.") else "text_model." + k
        sd["cond_stage_model.transformer." + k] = v.contiguous()
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    cfg = _tiny_config_dir(tmp_path)
    te_cfg = json.loads((cfg / "text_encoder/config.json").read_text())
    te_cfg["intermediate_size"] = te.config.intermediate_size
    (cfg / "text_encoder/config.json").write_text(json.dumps(te_cfg))
    parts = load_components(tmp_path / "tiny.safetensors", config_dir=cfg)
    assert parts["family"] == "sd1" and parts["prediction_type"] == "epsilon" and parts["name"] == "tiny"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        ref = ldm.model.diffusion_model(x, torch.tensor([321]), context=ctx)
        out = parts["unet"](x, torch.tensor([321]), encoder_hidden_states=ctx).sample
        ids = parts["tokenizer"](["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        t_ref = te(ids)[0]
        t_out = parts["text_encoder"](ids)[0]
    assert (out - ref).abs().max() < 1e-4
    assert (t_out - t_ref).abs().max() < 1e-4
