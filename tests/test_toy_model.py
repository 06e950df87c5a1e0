"""The embedded toy model: the shipped weights load into the SD1-shaped parts, the backend serves the
training core, the batched sampler is the diffusers pipeline's sampling, and the model knows its world
(a quick base-quality check; the 8 × 64 figure comes from ``demo``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest_toy import toy_backend  # noqa: F401 - fixture (skips without diffusers or weights)


def test_weights_are_small_and_carry_their_recipe():
    from lora_trainer.toy import model as M

    if not M.WEIGHTS.is_file():
        pytest.skip("toy weights not built")
    assert M.WEIGHTS.stat().st_size < 12e6
    md = M.read_metadata()
    assert md["format"] == M.FORMAT
    assert md["script"] == "python -m lora_trainer.toy.build"
    assert isinstance(md["build_config"], dict) and "seed" in md["build_config"]
    figures = md["figures"]
    assert figures["unet_steps"] > 0 and figures["vae_steps"] > 0
    assert 0.0 <= figures["base_quality"] <= 1.0


def test_backend_is_an_sd1_model_a_toy_preset_lora_fits(toy_backend):
    from lora_trainer.config import TOY_PRESET
    from lora_trainer.training.backend import ModelBackend

    be = toy_backend
    assert isinstance(be, ModelBackend)
    from lora_trainer.toy import model as M

    # SD1's architecture and names; it predicts v (the build's choice, written in the file)
    assert (be.family, be.name, be.prediction_type) == ("sd1", "lora-trainer-toy", "v_prediction")
    assert M.read_metadata()["prediction_type"] == "v_prediction"
    assert len(be.tokenizer) == 49408
    unet, te = be.lora_targets("unet"), be.lora_targets("te")
    assert any(k.startswith("lora_unet_down_blocks_0_attentions_0_") for k in unet)
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in te
    widths = [min(m.in_features, m.out_features) if isinstance(m, torch.nn.Linear)
              else min(m.in_channels, m.out_channels) for m in {**unet, **te}.values()]
    assert min(widths) >= TOY_PRESET["rank"], "rank never above the smallest targeted layer width"
    lat = be.encode_images(torch.zeros(2, 3, 64, 64))
    assert lat.shape == (2, 4, 16, 16)
    cond = be.encode_text(["red circle, white background, large, center", ""])
    assert cond.shape == (2, 77, 64)
    out = be.denoise(lat, torch.tensor([10, 500]), cond)
    assert out.shape == lat.shape and torch.isfinite(out).all()


def test_untrained_token_rows_are_the_seeded_draw(toy_backend):
    """Only trained token rows are stored; the trigger's tokens (never in the base data) are regenerated."""
    from lora_trainer.toy import model as M

    table = toy_backend.text_encoder.get_input_embeddings().weight
    base = M.base_token_embedding()
    zkw = toy_backend.tokenizer("zkw").input_ids[1:-1]
    red = toy_backend.tokenizer("red").input_ids[1]
    assert torch.equal(table[zkw], base[zkw])
    assert not torch.allclose(table[red], base[red]), "words of the world were trained"


def test_batched_sampler_matches_the_diffusers_pipeline(toy_backend):
    from lora_trainer.generate import DiffusersGenerator
    from lora_trainer.toy import model as M

    prompt = "blue square, black background, large, center"
    ours = M.sample(toy_backend, [prompt], [3, 4], steps=6)
    ref = DiffusersGenerator(toy_backend).generate([prompt], seeds=[3, 4], steps=6, cfg_scale=M.CFG_SCALE, size=64)
    for a, b in zip(ours, ref):
        diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert diff.max() <= 3, diff.max()
    assert np.abs(np.asarray(ours[0], dtype=np.int16) - np.asarray(ours[1], dtype=np.int16)).max() > 20


def test_base_model_draws_the_prompted_shape_and_colour(toy_backend):
    from lora_trainer.toy import model as M

    q = M.base_quality(toy_backend, seeds=tuple(range(16)), prompts=M.BASE_PROMPTS[:4])
    assert q["rate"] >= 0.70, q["per_prompt"]


def test_base_model_never_draws_a_star(toy_backend):
    from lora_trainer.toy.demo import star_rate

    assert star_rate(toy_backend, None, tuple(range(16))) <= 0.10


def test_demo_dataset_is_a_kohya_folder_of_the_base_world(tmp_path):
    from lora_trainer.toy import model as M
    from lora_trainer.toy.world import BASE_SHAPES
    from lora_trainer.training.data import scan_dataset

    root = M.demo_dataset(tmp_path / "demo")
    scan = scan_dataset(root, 1)
    assert scan.num_images == 20 and (root / "10_toy").is_dir()
    assert scan.num_samples == 200
    captions = [it.caption for it in scan.items]
    assert all(any(f" {s}," in c for s in BASE_SHAPES) for c in captions)
    assert M.demo_dataset(tmp_path / "demo") == root  # made once


def test_commands_default_to_the_toy_model(toy_backend):
    from lora_trainer.models import load_backend

    be, preset = load_backend(None, torch.device("cpu"))
    assert be.name == "lora-trainer-toy" and preset["resolution"] == 64
