"""The demo's acceptance on 16 seeds (the 64-seed figures come from ``demo`` itself): the shared toy LoRA
puts the new shape in ≥ 80% of generations with the trigger word, the same prompts and seeds without it in
≤ 10%; and the ``demo`` command runs end to end and writes what it promises."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from conftest import needs_diffusers
from conftest_toy import TEST_LORA_STEPS, toy_backend, toy_lora  # noqa: F401 - fixtures

pytestmark = needs_diffusers
SEEDS = tuple(range(1000, 1016))


def test_shared_lora_was_trained_from_auto_tagged_rings(toy_lora):
    from lora_trainer.toy.demo import N_IMAGES, TRIGGER

    captions = sorted(toy_lora.image_dir.glob("*.txt"))
    assert len(captions) == N_IMAGES
    texts = [c.read_text(encoding="utf-8").strip() for c in captions]
    assert all(t.startswith(TRIGGER + ", ") for t in texts)
    assert not any("ring" in t for t in texts), "the trigger word, not the shape's name, carries the concept"
    assert toy_lora.figures["train"]["steps"] == TEST_LORA_STEPS


def test_lora_teaches_the_new_shape(toy_lora, toy_backend):
    """On the demo's 64 test seeds. The toy acceptance's ≥ 80 % is the LR sweep's mean over three training
    seeds (89 % at the preset's 4e-3; 84–97 % per seed). One training's rate moves by several points with the
    seed and with the CPU's arithmetic: seed 42 at the old 8e-3 gave 86 % on an earlier session's machine and
    61 % on an AMD EPYC with AVX2. So the one shared LoRA is held to 75 % here; a LoRA that did not learn the
    ring is far below (2–10 %), as is one that broke (0–9 % above the cliff)."""
    from lora_trainer.toy.demo import TEST_SEEDS, new_shape_rate

    with_lora = new_shape_rate(toy_backend, toy_lora.lora, TEST_SEEDS)
    without = new_shape_rate(toy_backend, None, SEEDS)
    assert with_lora >= 0.75, f"ring in {with_lora:.0%} of the 64 generations with the LoRA"
    assert without <= 0.10, f"ring in {without:.0%} of generations without the LoRA"


def test_lora_at_weight_zero_is_the_base_model(toy_lora, toy_backend):
    from lora_trainer.toy.demo import generate, test_pairs

    pairs = test_pairs(SEEDS[:2])
    a = generate(toy_backend, pairs)
    b = generate(toy_backend, pairs, lora=toy_lora.lora, weight=0.0)
    assert [list(x.getdata()) for x in a] == [list(x.getdata()) for x in b]


def test_ticker_says_a_line_every_so_often_and_always_the_last():
    from lora_trainer.toy.demo import Ticker

    now, said = [0.0], []
    tick = Ticker(said.append, "images", 100, every=10.0, clock=lambda: now[0])
    for done in range(1, 101):
        now[0] += 1.5  # one item every 1.5 s
        tick(done, 100)
    assert said[0] == "  images 7/100" and said[-1] == "  images 100/100"
    assert len(said) == 15  # 150 s: one line per 10.5 s and the last


def test_demo_command_end_to_end(tmp_path, capsys):
    from lora_trainer.cli import main

    from lora_trainer.toy import demo
    from lora_trainer.toy.demo import N_IMAGES

    out = tmp_path / "demo"
    every, demo.PROGRESS_EVERY = demo.PROGRESS_EVERY, 0.0  # every tick says its line: all phases are seen
    try:
        assert main(["demo", "--output-dir", str(out), "--steps", "2", "--quick", "--seed", "43"]) == 0
    finally:
        demo.PROGRESS_EVERY = every
    # progress in every long phase, on stderr, in plain lines (what a pipe or a CI log shows)
    err = capsys.readouterr().err
    import re

    assert re.search(r"\n  probe step \d+/30 loss", err), "the LR probe"
    for line in ("caching latents 20/20", "step 2/2 loss", "images without the LoRA 8/8",
                 "images with the LoRA 8/8", "base model images 16/16", "detector check images 50/50"):
        assert f"\n  {line}" in err, line
    assert "images without the LoRA 4/8" in err, "sampling reports within a batch, not only at its end"
    result = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert result["steps_run"] == ["photos", "prepare", "auto-tag", "cleanup", "estimate", "train", "test"]
    assert result["details"]["train"]["seed"] == 43
    # --quick trains once (from --seed); the full demo's mean over three trainings is then that one's
    assert result["with_lora_per_seed"] == {"43": result["with_lora"]}
    assert result["details"]["train"]["seeds"] == [43]
    assert "range test step 20/20" in err, "--quick keeps the range test short"
    # prepare: every photo reported, the empty file and the exact copy skipped by name, the rest imported
    report = json.loads((out / "dataset" / "10_zkw" / "report.json").read_text(encoding="utf-8"))
    by_name = {f["file"]: f for f in report["files"]}
    assert len(by_name) == N_IMAGES + 2
    assert by_name["IMG_broken.jpg"]["status"] == "skipped"
    assert by_name["IMG_0000 (1).png"]["status"] == "skipped"
    assert sum(f["status"] == "ok" for f in report["files"]) == N_IMAGES
    assert any(n.startswith("圆环_") for n in by_name), "CJK names kept as they are"
    assert (out / "photos" / "IMG_broken.jpg").stat().st_size == 0, "the source folder is only read"
    # the sideways JPEG was turned upright: the render it came from, within JPEG noise (not its rotation)
    import numpy as np

    from lora_trainer.toy.demo import DATASET_SEED, dataset_scenes
    from lora_trainer.toy.world import render

    scenes = dataset_scenes(np.random.default_rng(DATASET_SEED))
    truth = np.asarray(render(scenes[1]), dtype=np.float32)
    got = np.asarray(Image.open(out / "dataset" / "10_zkw" / "IMG_0001.png").convert("RGB"), dtype=np.float32)
    assert np.abs(got - truth).mean() < 3 < np.abs(got - np.rot90(truth)).mean()
    # cleanup and estimate left their outputs
    cleanup = json.loads((out / "cleanup.json").read_text(encoding="utf-8"))
    assert set(cleanup) >= {"applied", "flagged", "written"}
    est = result["details"]["estimate"]
    assert est["unet_lr"] > 0 and est["steps"] <= 30 and (out / "lr-estimate" / "lr-estimate.png").is_file()
    for key in ("with_lora", "without_lora", "base_quality", "detector_accuracy"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["detector_accuracy"] >= 0.95
    assert result["seconds"] > 0
    assert (out / "zkw.safetensors").is_file() and (out / "zkw.json").is_file()
    assert len(list((out / "dataset" / "10_zkw").glob("*.png"))) == 20
    grid = Image.open(out / "grid.png")
    assert grid.width >= 2 * 256 and grid.height > 256
    assert list((out / "jobs").glob("*/state.json")), "training ran as a job"
