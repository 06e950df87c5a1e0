"""The embedded toy model: the shipped weights load into the SD1-shaped parts, the backend serves the
training core, the batched sampler is the diffusers pipeline's sampling, and the model knows its world
(a quick base-quality check; the 8 × 64 figure comes from ``demo``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import needs_diffusers
from conftest_toy import toy_backend  # noqa: F401 - fixture (skips without diffusers or weights)


def test_weights_are_small_and_carry_their_recipe():
    from lora_trainer.toy import model as M

    if not M.WEIGHTS.is_file():
        pytest.skip("toy weights not built")
    assert M.WEIGHTS.stat().st_size < 12e6
    md = M.read_metadata()
    assert md["format"] == M.FORMAT
    assert md["script"].startswith("python -m lora_trainer.toy.build")
    assert isinstance(md["build_config"], dict) and "seed" in md["build_config"]
    if "--continue" in md["script"]:  # a continued build lists every phase, the first one the plain build
        phases = md["phases"]
        assert len(phases) >= 2 and phases[0]["build_config"] == md["build_config"]
        assert all(p["unet_steps"] > 0 for p in phases[1:])
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


def test_base_model_never_draws_the_new_shape(toy_backend):
    from lora_trainer.toy.demo import new_shape_rate

    assert new_shape_rate(toy_backend, None, tuple(range(16))) <= 0.10


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


def test_build_captions_teach_the_trigger_form_and_unknown_words():
    """Each base image trains with three captions: the world's, the trigger's form (shape's name first, on
    its own) and that form with 1–2 unknown tokens in the shape's place, drawn from a pool that holds no
    word of the world and not the demo's trigger."""
    from lora_trainer.toy import build as B
    from lora_trainer.toy.demo import TRIGGER
    from lora_trainer.toy.tokenizer import load_clip_tokenizer
    from lora_trainer.toy.world import caption, sample_scene

    tok = load_clip_tokenizer()
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(40)]
    forms = [B.caption_forms(s) for s in scenes]
    s = scenes[0]
    assert forms[0] == (caption(s), f"{s.shape}, {s.colour}, {s.background} background, {s.size}, {s.position}")
    ids, empty, world, pool = B.tokenize_captions(tok, forms, B.BuildConfig(unknown_pool=100), np.random.default_rng(1))
    assert ids.shape == (40, 3, 77) and len(pool) == 100
    assert not set(pool) & (set(world) | set(tok(TRIGGER).input_ids))
    pool_set, lengths = set(pool), set()
    for i in range(40):
        trigger_form, unknown = ids[i, 1].tolist(), ids[i, 2].tolist()
        assert tok.decode(ids[i, 0], skip_special_tokens=True).replace(" ,", ",") == forms[i][0]
        k = 1
        while unknown[k] in pool_set:
            k += 1
        lengths.add(k - 1)
        assert unknown[k:k + 12] == trigger_form[2:14], "the rest of the caption is kept, shifted"
    assert lengths == {1, 2}


@needs_diffusers
def test_build_keeps_unknown_word_rows_as_drawn():
    """The unknown words train the model, not their own embedding rows: those stay the seeded draw, so the
    file need not store them and they stay like every other token the model never learned."""
    from lora_trainer.toy import build as B, model as M
    from lora_trainer.toy.tokenizer import load_clip_tokenizer
    from lora_trainer.toy.world import sample_scene

    torch.manual_seed(0)
    tok = load_clip_tokenizer()
    rng = np.random.default_rng(0)
    forms = [B.caption_forms(sample_scene(rng)) for _ in range(8)]
    cfg = B.BuildConfig(unet_steps=3, unet_batch=4, warmup=1, eval_every=0, unknown_pool=50, unknown_word=0.5,
                        ema=0.0)
    ids, empty, world, pool = B.tokenize_captions(tok, forms, cfg, rng)
    parts = M.build_components()
    mean, std = torch.randn(8, 4, 16, 16), torch.full((8, 4, 16, 16), 0.1)
    B.train_diffusion(parts, mean, std, ids, empty, cfg, 60.0, torch.Generator().manual_seed(0), frozen=pool)
    table, drawn = parts["text_encoder"].get_input_embeddings().weight, M.base_token_embedding()
    used_pool = sorted(set(ids[:, 2].flatten().tolist()) & set(pool))
    assert used_pool, "some unknown words were in the batches' captions"
    assert torch.equal(table[used_pool], drawn[used_pool])
    assert not torch.allclose(table[world], drawn[world]), "the world's words did train"
