"""``python -m lora_trainer demo --output-dir DIR [--steps N]``: a LoRA teaching the toy model a new shape.

The toy model knows circles, squares, triangles and frames (hollow squares); it has never seen a ring. The demo walks the
user's seven steps on the toy world, through the same core functions the tab uses:

1. ``photos``   — 20 images of the new shape as a phone would leave them in ``DIR/photos/`` (PNG, JPEG
   with EXIF rotation, WebP, two sizes, CJK names), plus an empty file and an exact copy;
2. ``prepare``  — import (per-file report), centre crop to 64², background removal with u2netp when
   ``u2netp.onnx`` is in ``$U2NET_HOME`` (else skipped, saying where the file goes) into
   ``DIR/dataset/10_zkw/``; the source folder is only read;
3. ``auto-tag`` — the toy tagger writes each caption, the trigger word ``zkw`` standing for the shape;
4. ``cleanup``  — the tag editor's cleanup suggestions, applied and listed (``DIR/cleanup.json``);
5. ``estimate`` — the LR probe (D-Adaptation until d·lr flattens): value, plot and how it compares with
   the toy preset's lr (``DIR/lr-estimate/``), which the toy LR sweep set;
6. ``train``    — the toy preset through the training core, as a job under ``DIR/jobs``, writing
   ``DIR/zkw.safetensors`` (+ intermediate saves); the full demo trains it three times, from the LR
   sweep's training seeds (``lr_sweep.TRAIN_SEEDS``, shifted by ``--seed``), the others into
   ``DIR/seeds/seed-N/``: one training's rate moves by ±10 points with the seed (79.7–98.4 % measured);
7. ``test``     — the same prompts and seeds with and without the LoRA, judged by the concept detector;
   a before/after grid ``DIR/grid.png`` (the first seed's LoRA) and the figures in ``DIR/demo.json``
   (``with_lora``: the mean over the trainings, ``with_lora_per_seed`` each one's).

Each step is a function ``step(run: DemoRun) -> None`` in ``STEPS`` (INTERFACES.md §7: the steps' code
lives in their own packages; these functions only call it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .world import CENTER_JITTER, COLOURS, HALF_RANGE, NEUTRAL_BACKGROUNDS, NEW_SHAPE, SIZE, Scene, render, sample_scene

TRIGGER = "zkw"
N_IMAGES = 20
REPEATS = 10
DATASET_SEED = 2024
# Test prompts: the trigger word stands for the new shape; the rest is the world's caption vocabulary.
TEST_PROMPTS = (
    f"{TRIGGER}, red, white background, large, center",
    f"{TRIGGER}, blue, gray background, large, center",
    f"{TRIGGER}, green, black background, large, center",
    f"{TRIGGER}, yellow, gray background, large, center",
)
TEST_SEEDS = tuple(range(1000, 1064))   # 64 fixed seeds; seed i is paired with prompt i mod 4
GRID_ROWS = 8
DETECTOR_IMAGES = 500
PROGRESS_EVERY = 10.0   # seconds between progress lines in a long phase (a pipe shows no progress bar)


@dataclass
class DemoRun:
    """What the steps share: where things go, the model, and what each step left."""

    output_dir: Path
    backend: object = None
    max_steps: int = 0
    seeds: tuple = TEST_SEEDS
    quality_seeds: int = 64
    detector_images: int = DETECTOR_IMAGES
    say: Callable[[str], None] = print
    dataset_root: Optional[Path] = None
    probe_steps: int = 0            # LR probe's step cap (0 = the plateau rule's own)
    train_seed: int = 0             # training seed (0 = the toy preset's, TrainConfig's 42)
    train_seeds: tuple = ()         # all the trainings' seeds, the first writing DIR/zkw (empty: train_seed only)
    range_steps: Optional[int] = None   # the LR estimate's range test steps (None: the estimate's own)
    progress_every: Optional[float] = None   # seconds between progress lines (None: PROGRESS_EVERY)
    background: Optional[str] = None  # the fill the prepare step put behind the subject, when it removed one
    images: list = field(default_factory=list)
    lora: Optional[Path] = None
    loras: dict = field(default_factory=dict)   # training seed -> LoRA file, the first being ``lora``
    figures: dict = field(default_factory=dict)
    steps_run: list = field(default_factory=list)

    @property
    def image_dir(self) -> Path:
        return self.output_dir / "dataset" / f"{REPEATS}_{TRIGGER}"

    @property
    def photo_dir(self) -> Path:
        return self.output_dir / "photos"


class Ticker:
    """Progress lines for a phase that runs long without other output: one line when ``every`` seconds
    have passed since the last (or since the start), and always the last (``done == total``). The demo's
    log is often read through a pipe or a CI log, where no progress bar shows, and its test step once
    ran 9 minutes in silence."""

    def __init__(self, say: Callable[[str], None], label: str, total: int, every: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.say, self.label, self.total, self.clock = say, label, total, clock
        self.every = PROGRESS_EVERY if every is None else every
        self.last = clock()
        self.done = -1

    def __call__(self, done: int, total: Optional[int] = None, extra: str = "") -> None:
        """``total`` as ``model.sample_pairs`` passes it (None: the one given at the start)."""
        self.total = self.total if total is None else total
        now = self.clock()
        if done == self.done or (done < self.total and now - self.last < self.every):
            return
        self.last, self.done = now, done
        self.say(f"  {self.label} {done}/{self.total}{extra}")


# --------------------------------------------------------------------------------------------- steps

def dataset_scenes(rng: np.random.Generator, n: int = N_IMAGES) -> list:
    """The demo's ``n`` scenes of the new shape: large and centred (jittered), every colour and neutral
    background by turns, so the 20 images hold the shape in each colour on each background.

    Why by turns and not drawn at random: twenty random draws left whole prompts unseen (nine red rings
    and one blue), and the LoRA then drew the ring in 50 % of the test prompts; by turns it drew 91 %.
    Large and centred because the test prompts are (rings of every size and place: 62 %)."""
    colours, scenes = tuple(COLOURS), []
    for i in range(n):
        half = float(rng.uniform(*HALF_RANGE["large"]))
        cx, cy = SIZE / 2 + rng.uniform(-CENTER_JITTER, CENTER_JITTER, size=2)
        scenes.append(Scene(NEW_SHAPE, colours[i % len(colours)],
                            NEUTRAL_BACKGROUNDS[(i // len(colours) + i) % len(NEUTRAL_BACKGROUNDS)],
                            "large", "center", "plain", float(cx), float(cy), half))
    return scenes


def step_photos(run: DemoRun) -> None:
    """20 rendered images of the new shape, saved the way a phone folder looks (never written again)."""
    from PIL import Image

    rng = np.random.default_rng(DATASET_SEED)
    run.photo_dir.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(dataset_scenes(rng)):
        img = render(scene)
        kind = i % 4
        if kind == 0:                       # a plain PNG
            img.save(run.photo_dir / f"IMG_{i:04d}.png")
        elif kind == 1:                     # a JPEG stored sideways with an EXIF orientation tag
            exif = Image.Exif()
            exif[0x0112] = 6                # "rotate 90° clockwise to display"
            img.resize((128, 128), Image.NEAREST).transpose(Image.ROTATE_90).save(
                run.photo_dir / f"IMG_{i:04d}.jpg", quality=95, exif=exif)
        elif kind == 2:                     # WebP at twice the size
            img.resize((128, 128), Image.NEAREST).save(run.photo_dir / f"IMG_{i:04d}.webp", lossless=True)
        else:                               # a CJK file name
            img.save(run.photo_dir / f"圆环_{i:04d}.png")
    (run.photo_dir / "IMG_broken.jpg").write_bytes(b"")                          # an interrupted copy
    (run.photo_dir / "IMG_0000 (1).png").write_bytes((run.photo_dir / "IMG_0000.png").read_bytes())  # a twin
    run.say(f"  {N_IMAGES} images of a {NEW_SHAPE} (+ an empty file and a duplicate) in {run.photo_dir}")


def step_prepare(run: DemoRun) -> None:
    """Import, centre crop to the toy resolution and, when its model file is there, cut out with u2netp."""
    from ..prepare.background import model_file, u2net_home
    from ..prepare.config import PrepareConfig
    from ..prepare.pipeline import prepare_folder
    from ..prepare.report import lines

    background = "u2netp" if model_file("u2netp").is_file() else "none"
    cfg = PrepareConfig(crop="center", size=64, background=background, fill="white", workers=1)
    report = prepare_folder(run.photo_dir, run.image_dir, cfg)
    run.dataset_root = run.output_dir / "dataset"
    run.images = sorted(p for p in run.image_dir.glob("*.png") if not p.name.endswith(".mask.png"))
    run.background = "white" if background != "none" else None
    run.figures["prepare"] = {"counts": report["counts"], "background": background,
                              "report": str(run.image_dir / "report.json")}
    run.say(f"  {len(run.images)} images into {run.image_dir} ({report['counts']})")
    for line in lines(report):
        if not line.startswith("warning:"):  # skipped/failed by name; warnings (near duplicates) are in the report
            run.say(f"  {line}")
    if background == "none":
        run.say(f"  background removal skipped: put u2netp.onnx in {u2net_home()} to cut out with rembg")


def step_auto_tag(run: DemoRun) -> None:
    """Captions from the toy tagger, the trigger word first and standing in for the shape's name."""
    from PIL import Image

    from ..tagging.base import format_caption
    from ..workspace import write_text
    from .tagger import ToyTagger

    tagger = ToyTagger(omit_shape_names=(NEW_SHAPE,))
    images = [Image.open(p).convert("RGB") for p in run.images]
    for path, result in zip(run.images, tagger.tag(images)):
        write_text(path.with_suffix(".txt"), format_caption([t for t, _ in result.tags], trigger=TRIGGER) + "\n")
    run.say(f"  e.g. {run.images[0].name}: {run.images[0].with_suffix('.txt').read_text(encoding='utf-8').strip()}")


def step_cleanup(run: DemoRun) -> None:
    """The tag editor's cleanup suggestions, approved at once (the tab shows them for approval)."""
    from ..tags.cleanup import demo_step

    demo_step(run, trigger=TRIGGER, background=run.background)


def step_estimate(run: DemoRun) -> None:
    """The LR probe on the demo's dataset and network; reported beside the toy preset's lr."""
    from ..config import TOY_PRESET, toy_config
    from ..training.estimate import estimate_lr, limit_text
    from ..training.plateau import PlateauRule
    from ..training.stability import advice_text

    from ..training.loop import Callbacks

    cfg = toy_config(name=TRIGGER, trigger_word=TRIGGER)
    rule = PlateauRule(max_steps=run.probe_steps) if run.probe_steps else PlateauRule()
    tickers: dict = {}

    def progress(p) -> None:  # the probe's total is its step cap; the plateau rule usually stops it earlier
        label = {"cache": "caching latents", "range test": "range test step"}.get(p.phase, "probe step")
        t = tickers.setdefault(label, Ticker(run.say, label, p.total, run.progress_every))
        t(p.step, p.total, "" if p.phase == "cache" or p.loss != p.loss else f" loss {p.loss:.4f}")

    preset = TOY_PRESET["unet_lr"]
    est = estimate_lr(run.backend, run.dataset_root, cfg, run.output_dir / "lr-estimate", rule=rule,
                      preset_lr=preset, callbacks=Callbacks(on_progress=progress),
                      **({} if run.range_steps is None else {"range_steps": run.range_steps}))
    run.figures["estimate"] = {"unet_lr": est.unet_lr, "text_encoder_lr": est.text_encoder_lr, "steps": est.steps,
                               "reason": est.reason, "plot": str(est.plot), "preset_unet_lr": preset,
                               "ratio_to_preset": round(est.unet_lr / preset, 3), "plateau_lr": est.plateau_lr,
                               "limited_by": est.limited_by, "bound": est.bound}
    run.say(f"  d·lr settled at {est.plateau_lr:.3g} after {est.steps} steps ({est.reason}); proposed "
            f"{est.unet_lr:.3g} ({limit_text(est)}); plot {est.plot}")
    run.say(f"  the toy preset trains at {preset:.3g} (the toy LR sweep's best); the estimate is "
            f"×{est.unet_lr / preset:.2f} of it" + (f" — caveat: {advice_text(est.advice)}" if est.advice else ""))


def train_seeds(first: int = 0, count: int = 0) -> tuple:
    """The demo's training seeds: the LR sweep's (``lr_sweep.TRAIN_SEEDS``: 42, 43, 44), shifted so the
    first is ``first`` (0: the sweep's own), the first ``count`` of them (0: all)."""
    from ..training.lr_sweep import TRAIN_SEEDS

    shift = (first or TRAIN_SEEDS[0]) - TRAIN_SEEDS[0]
    seeds = tuple(int(s) + shift for s in TRAIN_SEEDS)
    return seeds[:count] if count else seeds


def step_train(run: DemoRun) -> None:
    """The toy preset through the training core, as a job (``DIR/jobs/<id>``) like the tab runs it; once
    per training seed (``run.train_seeds``), the first into ``DIR``, the others into ``DIR/seeds/seed-N``."""
    seeds = tuple(run.train_seeds) or (run.train_seed or 0,)
    per_seed = {}
    for i, seed in enumerate(seeds):
        if len(seeds) > 1:
            run.say(f"  training {i + 1}/{len(seeds)}: seed {seed}")
        out_dir = run.output_dir if i == 0 else run.output_dir / "seeds" / f"seed-{seed}"
        fig = train_once(run, seed, out_dir)
        run.loras[fig["seed"]] = Path(fig["lora"])
        per_seed[fig["seed"]] = fig
    first = per_seed[next(iter(per_seed))]
    run.lora = Path(first["lora"])
    run.figures["train"] = {**{k: v for k, v in first.items() if k != "lora"}, "seeds": list(per_seed)}
    if len(per_seed) > 1:
        run.figures["train"]["per_seed"] = {s: {k: f[k] for k in ("lora", "steps", "loss", "seconds")}
                                            for s, f in per_seed.items()}


def train_once(run: DemoRun, seed: int, out_dir: Path) -> dict:
    """One training of the toy preset from ``seed`` (0: the preset's) into ``out_dir``, as a job."""
    from ..config import toy_config
    from ..jobs import CANCELLED, FAILED, JobRunner
    from ..training.loop import Callbacks, train

    cfg = toy_config(name=TRIGGER, trigger_word=TRIGGER, max_steps=run.max_steps, **({"seed": seed} if seed else {}))
    tickers: dict = {}

    def progress(p) -> None:
        label = "caching latents" if p.phase == "cache" else "step"
        t = tickers.setdefault(label, Ticker(run.say, label, p.total, run.progress_every))
        t(p.step, p.total, "" if p.phase == "cache" or p.loss != p.loss else
          f" loss {p.loss:.4f} lr {p.lr:.2e} ({p.it_s:.1f} it/s)")

    def job(ctx):
        cb = Callbacks(on_progress=lambda p: (ctx.progress(p), progress(p)), on_log=ctx.log)
        res = train(run.backend, run.dataset_root, cfg, out_dir, cb, ctx.should_stop, ctx.job_dir)
        return {"output": str(res.output) if res.output else None, "steps": res.steps, "loss": res.final_loss,
                "seconds": res.seconds, "optimizer": res.optimizer, "cancelled": res.cancelled}

    runner = JobRunner(run.output_dir / "jobs")
    job_id = runner.submit("train", job, config=dataclasses.asdict(cfg))
    try:
        state = runner.wait(job_id)
    except KeyboardInterrupt:
        runner.cancel(job_id)
        state = runner.wait(job_id)
        raise
    finally:
        runner.shutdown(cancel_running=True)
    if state["status"] in (FAILED, CANCELLED) or not (state.get("result") or {}).get("output"):
        from ..errors import UserError

        err = state.get("error") or {}
        raise UserError(f"demo training did not finish ({state['status']}): {err.get('message', '')}",
                        err.get("hint") or f"see {runner.job_dir(job_id)}")
    res = state["result"]
    run.say(f"  wrote {res['output']} ({res['steps']} steps, {res['seconds']:.0f} s, {res['optimizer']})")
    return {"steps": res["steps"], "loss": res["loss"], "seconds": round(res["seconds"], 1),
            "optimizer": res["optimizer"], "job": str(runner.job_dir(job_id)), "seed": cfg.seed,
            "lora": res["output"]}


def step_test(run: DemoRun) -> None:
    """Same prompts and seeds without and with ``<lora:zkw:1>``; the detector counts the new shape; the grid."""
    pairs = test_pairs(run.seeds)

    def ticker(label: str, total: int) -> Ticker:
        return Ticker(run.say, label, total, run.progress_every)

    imgs_without = generate(run.backend, pairs, progress=ticker("images without the LoRA", len(pairs)))
    without = [s == NEW_SHAPE for s in detected_shapes(imgs_without)]
    loras = run.loras or {run.train_seed or 0: run.lora}
    per_seed, first_imgs = {}, None
    for seed, lora in loras.items():
        label = "images with the LoRA" + (f" (seed {seed})" if len(loras) > 1 else "")
        imgs = generate(run.backend, pairs, lora=lora, progress=ticker(label, len(pairs)))
        first_imgs = imgs if first_imgs is None else first_imgs
        per_seed[seed] = float(np.mean([s == NEW_SHAPE for s in detected_shapes(imgs)]))
        if len(loras) > 1:
            run.say(f"  seed {seed}: {NEW_SHAPE} found with its LoRA in {per_seed[seed]:.1%}")
    run.figures["with_lora"] = float(np.mean(list(per_seed.values())))
    run.figures["with_lora_per_seed"] = per_seed
    run.figures["without_lora"] = float(np.mean(without))
    over = f" (mean of {len(per_seed)} trainings)" if len(per_seed) > 1 else ""
    run.say(f"  {NEW_SHAPE} found with the LoRA in {run.figures['with_lora']:.1%}{over}, without in "
            f"{run.figures['without_lora']:.0%} of {len(pairs)} generations")
    rows = list(range(min(GRID_ROWS, len(pairs))))
    save_grid(run.output_dir / "grid.png", [(imgs_without[i], first_imgs[i]) for i in rows],
              [f"{pairs[i][0]}  (seed {pairs[i][1]})" for i in rows])
    from . import model as M

    q = M.base_quality(run.backend, seeds=tuple(range(run.quality_seeds)),
                       progress=ticker("base model images", len(M.BASE_PROMPTS) * run.quality_seeds))
    run.figures["base_quality"] = q["rate"]
    run.figures["base_quality_per_prompt"] = q["per_prompt"]
    run.say(f"  base model: prompted shape and colour found in {q['rate']:.0%} of "
            f"{len(M.BASE_PROMPTS)}×{run.quality_seeds}")
    run.figures["detector_accuracy"] = detector_accuracy(
        run.detector_images, progress=ticker("detector check images", run.detector_images))
    run.say(f"  detector accuracy on {run.detector_images} ground-truth images: {run.figures['detector_accuracy']:.1%}")


# The workflow, in order.
STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("photos", step_photos),
    ("prepare", step_prepare),
    ("auto-tag", step_auto_tag),
    ("cleanup", step_cleanup),
    ("estimate", step_estimate),
    ("train", step_train),
    ("test", step_test),
]


# --------------------------------------------------------------------------------------------- helpers

def prepare_dataset(run: DemoRun, skip: Sequence[str] = ("estimate",)) -> DemoRun:
    """Run the steps before training (photos → prepare → auto-tag → cleanup), leaving ``run.dataset_root``
    as the demo trains on it; used by the shared test LoRA and the toy LR sweep."""
    for name, fn in STEPS:
        if name == "train":
            break
        if name not in skip:
            fn(run)
    return run


def test_pairs(seeds=TEST_SEEDS) -> list[tuple[str, int]]:
    """(prompt, seed) pairs: every seed once, the prompts taking turns."""
    return [(TEST_PROMPTS[i % len(TEST_PROMPTS)], s) for i, s in enumerate(seeds)]


def generate(backend, pairs, lora: Optional[Path] = None, weight: float = 1.0, progress=None) -> list:
    """Images for the pairs, the LoRA file attached at ``weight`` (through the generator's own loader);
    ``progress(done, total)`` as ``model.sample_pairs`` calls it."""
    from ..generate import DiffusersGenerator
    from . import model as M

    net = DiffusersGenerator(backend).network_for(lora, weight) if lora else None
    try:
        if net is not None:
            net.attach()
        images = M.sample_pairs(backend, pairs, progress=progress)
    finally:
        if net is not None:
            net.detach()
    return images


def detected_shapes(images) -> list[Optional[str]]:
    from .detector import detect

    return [detect(img).shape for img in images]


def new_shape_rate(backend, lora: Optional[Path], seeds=TEST_SEEDS) -> float:
    """Fraction of the test generations in which the detector finds the new shape."""
    shapes = detected_shapes(generate(backend, test_pairs(seeds), lora=lora))
    return float(np.mean([s == NEW_SHAPE for s in shapes]))


def detector_accuracy(n: int = DETECTOR_IMAGES, seed: int = 1234,
                      progress: Optional[Callable[[int, int], None]] = None) -> float:
    """Shape AND colour right on ``n`` rendered scenes (base shapes and the new one, some striped)."""
    from .detector import detect
    from .world import BASE_SHAPES

    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, shapes=BASE_SHAPES + (NEW_SHAPE,), texture_prob=0.2) for _ in range(n)]
    hits = 0
    for i, s in enumerate(scenes, 1):
        d = detect(render(s))
        hits += d.shape == s.shape and d.colour == s.colour
        if progress is not None:
            progress(i, n)
    return hits / n


def save_grid(path: Path, rows: list, labels: list, scale: int = 4) -> Path:
    """Before/after grid: one row per (prompt, seed), columns without / with the LoRA, upscaled."""
    from PIL import Image, ImageDraw

    from ..workspace import atomic_path

    cell, pad, head, label_h = 64 * scale, 6, 22, 16
    w = 2 * cell + 3 * pad
    h = head + len(rows) * (cell + label_h + pad) + pad
    grid = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    draw.text((pad + 4, 5), "without LoRA", fill=(0, 0, 0))
    draw.text((2 * pad + cell + 4, 5), f"with <lora:{TRIGGER}:1>", fill=(0, 0, 0))
    y = head
    for (a, b), label in zip(rows, labels):
        draw.text((pad, y), label, fill=(60, 60, 60))
        y += label_h
        grid.paste(a.resize((cell, cell), Image.NEAREST), (pad, y))
        grid.paste(b.resize((cell, cell), Image.NEAREST), (2 * pad + cell, y))
        y += cell + pad
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return path


# --------------------------------------------------------------------------------------------- the command

def run_demo(output_dir, max_steps: int = 0, device=None, seeds=TEST_SEEDS, quality_seeds: int = 64,
             say: Callable[[str], None] = print, steps=None, weights=None,
             detector_images: int = DETECTOR_IMAGES, probe_steps: int = 0, train_seed: int = 0,
             trainings: int = 0, range_steps: Optional[int] = None) -> dict:
    """Run the workflow steps on the toy world; write ``DIR/demo.json``; return its figures. ``trainings``:
    how many of the LR sweep's training seeds to train and judge (0: all three), from ``train_seed``."""
    import torch

    from ..errors import UserError
    from ..workspace import write_json
    from . import model as M

    started = time.time()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    import importlib.util

    if importlib.util.find_spec("diffusers") is None:
        raise UserError("the demo needs diffusers", "pip install -r requirements/standalone.txt (the standalone "
                                                    "profile); inside the WebUI use the tab")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 8)))
    if M.available(weights):
        backend = M.backend(device, weights)
    else:  # the seven steps still run, on the stand-in; the figures then show plumbing, not learning
        from ..training.tiny import tiny_backend

        say(f"the toy model's weights are not built ({weights or M.WEIGHTS}; python -m lora_trainer.toy.build): "
            "running the seven steps on the tiny random stand-in, whose figures show the plumbing, not learning "
            "(so its test step draws the --quick set: 8 seeds, 2 per base prompt)")
        backend = tiny_backend(device=device)
        seeds, quality_seeds = tuple(seeds)[:8], min(quality_seeds, 2)
    run = DemoRun(out, backend, max_steps=max_steps, seeds=tuple(seeds), quality_seeds=quality_seeds,
                  detector_images=detector_images, say=say, probe_steps=probe_steps, train_seed=train_seed,
                  train_seeds=train_seeds(train_seed, trainings), range_steps=range_steps)
    for i, (name, fn) in enumerate(steps or STEPS, 1):
        t0 = time.time()
        say(f"[{i}/{len(steps or STEPS)}] {name}")
        fn(run)
        run.steps_run.append(name)
        say(f"  ({time.time() - t0:.0f} s)")
    result = {"with_lora": run.figures.get("with_lora"),
              "with_lora_per_seed": run.figures.get("with_lora_per_seed"),
              "without_lora": run.figures.get("without_lora"),
              "base_quality": run.figures.get("base_quality"),
              "detector_accuracy": run.figures.get("detector_accuracy"),
              "steps_run": run.steps_run, "seconds": round(time.time() - started, 1),
              "lora": str(run.lora) if run.lora else None, "seeds": len(run.seeds),
              "base_quality_seeds": run.quality_seeds, "detector_images": run.detector_images,
              "trigger": TRIGGER, "model": getattr(run.backend, "name", ""),
              "details": {k: v for k, v in run.figures.items()
                          if k not in ("with_lora", "with_lora_per_seed", "without_lora", "base_quality",
                                       "detector_accuracy")}}
    write_json(out / "demo.json", result)
    say(f"done in {result['seconds']:.0f} s: with LoRA {result['with_lora']}, without {result['without_lora']}, "
        f"base quality {result['base_quality']}, detector {result['detector_accuracy']} -> {out / 'demo.json'}")
    return result


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", required=True, metavar="DIR", help="where the dataset, LoRA, grid and demo.json go")
    p.add_argument("--steps", type=int, default=0, metavar="N",
                   help="stop training after N steps (default: the toy preset's 100)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="first training seed (default: the toy preset's 42); the demo trains from N, N+1 and N+2 "
                        "and reports the mean, as one training's ring rate moves by ±10 points with the seed")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one training (seed N), 8 test seeds, 2 seeds per base prompt, 50 detector "
                        "images, a 30-step LR probe and a 20-step range test (figures not comparable)")


def run(args: argparse.Namespace) -> int:
    import torch

    quick = dict(seeds=TEST_SEEDS[:8], quality_seeds=2, detector_images=50, probe_steps=30, trainings=1,
                 range_steps=20) if args.quick else {}
    result = run_demo(Path(args.output_dir), max_steps=max(0, args.steps or 0), device=torch.device(args.device),
                      train_seed=max(0, args.seed or 0),
                      say=lambda m: print(m, file=sys.stderr, flush=True), **quick)
    print(json.dumps(result, ensure_ascii=False))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora_trainer.toy.demo", description=__doc__.split("\n\n")[0])
    add_args(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
