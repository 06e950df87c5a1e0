"""Loading models offline: diffusers folders, family/v-prediction detection, pickle refusal, the CLI."""

from __future__ import annotations

import pytest
import torch

from conftest import needs_diffusers
from lora_trainer.errors import UserError


def test_detect_family_from_keys():
    from lora_trainer.training.model_loading import TE_SD1_KEY, TE_SD2_KEY, UNET_ATTN2_K, detect_family

    assert detect_family({TE_SD1_KEY: [77, 768], UNET_ATTN2_K: [320, 768]}) == "sd1"
    assert detect_family({TE_SD2_KEY: [77, 1024], UNET_ATTN2_K: [320, 1024]}) == "sd2"
    assert detect_family({UNET_ATTN2_K: [320, 1024]}) == "sd2"
    with pytest.raises(UserError, match="SDXL"):
        detect_family({"conditioner.embedders.0.transformer.x": [1]})
    with pytest.raises(UserError, match="not a Stable Diffusion"):
        detect_family({"foo": [1]})


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "model.bin"])
def test_pickle_checkpoints_are_refused_with_a_conversion_hint(tmp_path, name):
    from lora_trainer.training.model_loading import load_components

    (tmp_path / name).write_bytes(b"not read")
    with pytest.raises(UserError) as e:
        load_components(tmp_path / name)
    assert "pickle" in e.value.message and "safetensors" in e.value.hint and "2.6" in e.value.hint


@needs_diffusers
@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_diffusers_folder_loads_offline(tmp_path, pred):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from tiny_sd import tiny_parts

    from lora_trainer.training.diffusers_backend import DiffusersBackend

    c = tiny_parts()
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=pred)
    StableDiffusionPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
                            scheduler=sched, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(tmp_path / "m")
    be = DiffusersBackend.load(tmp_path / "m")
    assert be.prediction_type == pred and be.family == "sd1" and be.name == "m"
    assert len(be.lora_targets("unet")) == 72 and len(be.lora_targets("te")) == 12
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(be.denoise(x, torch.tensor([5]), be.encode_text(["a"])),
                           c["unet"](x, torch.tensor([5]), encoder_hidden_states=be.encode_text(["a"])).sample)


def test_missing_model_and_not_a_folder(tmp_path):
    from lora_trainer.training.model_loading import load_components

    with pytest.raises(UserError, match="not found"):
        load_components(tmp_path / "nope.safetensors")
    (tmp_path / "d").mkdir()
    pytest.importorskip("diffusers")
    with pytest.raises(UserError, match="model_index.json"):
        load_components(tmp_path / "d")
