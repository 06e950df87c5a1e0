"""The LR estimate: what kohya users do by hand with D-Adaptation and TensorBoard, done by the trainer.

The probe trains the user's actual dataset and LoRA config with an adaptive optimizer (DAdaptAdam by
default, Prodigy as an option) at lr = 1.0 for the UNet and the text encoder alike, records the adapted
step d·lr every step, and stops by itself when the curve has plateaued (``plateau.PlateauRule``, with a
step cap). Then a range test (``range_test.py``) trains fresh weights with the run's own optimizer at an lr
ramped from 1/100 to 10 times that plateau value and measures a noise-free loss after each step;
``stability.stable_bound`` reads from it the highest lr measured to be stable (the lr at the loss minimum
÷ 4). The proposed UNet lr is the smaller of the two (``stability.propose``): never a value the estimate saw
the loss rise at. The text-encoder lr is that value times the config's ``te_lr_ratio`` (1/10 by default).

Why lr = 1.0 for both parts during the probe: DAdaptAdam and Prodigy share one ``d`` across all parameter
groups and refuse groups with different lrs (kohya's D-Adaptation runs set both to 1.0 for the same
reason), so the probe measures one step size for the whole network; the 1/10 for the text encoder is
applied to the proposal, in the run that follows.

The probe's weights are thrown away (trained into a temporary folder that is deleted); the real run
starts fresh. Only the job folder receives files: ``lr-estimate.json`` (the curve and the verdict) and
``lr-estimate.png`` (the plot).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

from .plateau import PlateauDetector, PlateauRule, Verdict
from .stability import Bound, StabilityRule, advice_text, preset_advice, propose, stable_bound

PROBE_OPTIMIZERS = ("DAdaptAdam", "Prodigy")
PLOT_NAME = "lr-estimate.png"
CURVE_NAME = "lr-estimate.json"
RANGE_STEPS = 60          # the range test's ramp: 20 steps per decade
RANGE_SPAN = (0.01, 10.0)  # from plateau/100 to plateau×10


@dataclass
class Estimate:
    """The probe's outcome. ``summary()`` is what ``estimate --json`` prints as its last line."""

    d_lr: float
    unet_lr: float
    text_encoder_lr: float
    steps: int
    reason: str                       # "plateau", "cap", "cancelled" or "end" (the data ran out first)
    optimizer: str
    curve: list = field(default_factory=list)   # [{"step", "d_lr", "loss"}]
    plot: Optional[Path] = None
    curve_file: Optional[Path] = None
    onset: Optional[int] = None       # first step of the flat window
    seconds: float = 0.0
    cancelled: bool = False
    run_optimizer: str = "AdamW8bit"
    rule: dict = field(default_factory=dict)
    plateau_lr: float = 0.0           # D-Adaptation's value (d_lr) before the range test's bound
    bound: Optional[dict] = None      # stability.Bound as a dict, None when the loss never rose
    limited_by: str = "plateau"       # what set the proposal: "plateau" or "range test"
    range_record: list = field(default_factory=list)   # [{"step", "lr", "loss", "train_loss"}]
    advice: Optional[dict] = None     # stability.preset_advice when the preset is more than ×2 away

    def summary(self) -> dict:
        return {"d_lr": self.d_lr, "unet_lr": self.unet_lr, "text_encoder_lr": self.text_encoder_lr,
                "steps": self.steps, "plot": str(self.plot) if self.plot else None}

    def proposed_config(self) -> dict:
        """The run that follows: the user's optimizer at the estimated lrs."""
        return {"optimizer": self.run_optimizer, "unet_lr": self.unet_lr, "text_encoder_lr": self.text_encoder_lr}

    def adaptive_config(self) -> dict:
        """The alternative: keep training with the adaptive optimizer itself (lr 1.0 for both parts)."""
        return {"optimizer": self.optimizer, "unet_lr": 1.0, "text_encoder_lr": 1.0}

    def as_dict(self) -> dict:
        return {**self.summary(), "reason": self.reason, "onset": self.onset, "optimizer": self.optimizer,
                "seconds": self.seconds, "cancelled": self.cancelled, "rule": self.rule,
                "plateau_lr": self.plateau_lr, "bound": self.bound, "limited_by": self.limited_by,
                "advice": self.advice,
                "curve_file": str(self.curve_file) if self.curve_file else None,
                "proposed": self.proposed_config(), "adaptive": self.adaptive_config()}


def reference_lr(preset: Optional[dict]) -> tuple[float, str]:
    """(the lr an estimate is compared with, what it is): the model preset's UNet lr, else the recipe's."""
    from ..config import TrainConfig

    if preset and preset.get("unet_lr"):
        return float(preset["unet_lr"]), "the preset"
    return float(TrainConfig.unet_lr), "the recipe's default"


def probe_resolution(cfg, resolution: int):
    """``cfg`` with the probe's own image size (the bucket range widened to hold it when needed)."""
    if not resolution or resolution == cfg.resolution:
        return cfg
    res = int(resolution)
    return dataclasses.replace(cfg, resolution=res, min_bucket_reso=min(cfg.min_bucket_reso, res),
                               max_bucket_reso=max(cfg.max_bucket_reso, res))


def round_lr(value: float, digits: int = 3) -> float:
    """An lr as a user would type it (3 significant digits: 3.64e-05)."""
    return float(f"{value:.{digits}g}") if value > 0 and math.isfinite(value) else value


def probe_config(cfg, num_samples: int, optimizer: str = "DAdaptAdam", max_steps: int = 600):
    """The user's config turned into the probe: adaptive optimizer at lr 1.0, constant schedule, no
    saves or samples, the loss read every step, and enough epochs that only the cap or the plateau ends it."""
    from ..errors import UserError

    if optimizer not in PROBE_OPTIMIZERS:
        raise UserError(f"the LR probe needs an adaptive optimizer, not {optimizer!r}",
                        f"choose one of {', '.join(PROBE_OPTIMIZERS)}")
    per_epoch = max(1, math.ceil(num_samples / cfg.batch_size))  # buckets only add steps to an epoch
    epochs = math.ceil(max_steps * cfg.gradient_accumulation_steps / per_epoch) + 1
    return dataclasses.replace(
        cfg, optimizer=optimizer, unet_lr=1.0, text_encoder_lr=1.0, lr_scheduler="constant", warmup_steps=0,
        warmup_ratio=0.0, epochs=epochs, max_steps=max_steps, save_fractions=[], save_every_n_epochs=0,
        sample_every_n_steps=0, sample_every_n_epochs=0, sync_every=1)


def estimate_lr(backend, data, cfg, job_dir: Optional[Union[str, Path]] = None, *,
                optimizer: str = "DAdaptAdam", rule: Optional[PlateauRule] = None, callbacks=None,
                should_stop: Callable[[], bool] = lambda: False, range_steps: int = RANGE_STEPS,
                stability: Optional[StabilityRule] = None, preset_lr: Optional[float] = None,
                preset_source: str = "the preset") -> Estimate:
    """Run the probe, then the range test (``range_steps`` steps; 0 skips it), on ``backend`` over ``data``
    (a folder or a ``DatasetScan``) with ``cfg``'s network. ``preset_lr``: the lr the estimate is compared
    with (``Estimate.advice`` when they are more than ×2 apart).

    ``callbacks.on_log`` receives every step's record (step, loss, lr, d_lr, it_s) and ``on_progress``
    the progress with ``phase="estimate"``; ``should_stop`` is the user's cancel. Writes the curve JSON
    and the plot into ``job_dir`` when given. The base model is left exactly as it was.
    """
    from . import data as D
    from .loop import Callbacks, Trainer

    rule = rule or PlateauRule()
    scan = data if isinstance(data, D.DatasetScan) else D.scan_dataset(data, cfg.repeats)
    pcfg = probe_config(cfg, scan.num_samples, optimizer, rule.max_steps)
    detector = PlateauDetector(rule)
    curve: list[dict] = []
    user = callbacks or Callbacks()

    def on_log(rec: dict) -> None:
        curve.append({"step": rec["step"], "d_lr": rec.get("d_lr"), "loss": rec.get("loss")})
        detector.update(rec.get("d_lr"))
        user.emit("on_log", rec)

    def on_progress(p) -> None:
        user.emit("on_progress", dataclasses.replace(p, phase="estimate"))

    cb = Callbacks(on_progress=on_progress, on_log=on_log)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="lora-trainer-probe-") as tmp:  # the probe's weights: thrown away
        res = Trainer(backend, scan, pcfg, Path(tmp), cb, lambda: detector.fired or should_stop(), None,
                      name="lr-probe").run()
    values = [c["d_lr"] for c in curve]
    if not values or all(v is None for v in values):
        raise RuntimeError(f"{res.optimizer} reported no adapted step size (d): cannot estimate the lr")
    verdict: Optional[Verdict] = detector.verdict
    if verdict is not None:
        reason, value, onset = verdict.reason, verdict.value, verdict.window_start
    else:  # cancelled by the user, or the data ended first: report where the curve got to
        reason = "cancelled" if res.cancelled else "end"
        value, onset = (detector.smoothed[-1] if detector.smoothed else values[-1]), None
    record: list = []
    bound: Optional[Bound] = None
    if range_steps > 0 and reason != "cancelled" and value > 0 and not should_stop():
        record = run_range_test(backend, scan, cfg, value, range_steps, user, should_stop)
        bound = stable_bound(record, stability)
    lr, limited_by = propose(value, bound)
    est = Estimate(d_lr=value, unet_lr=round_lr(lr), text_encoder_lr=round_lr(lr * cfg.te_lr_ratio),
                   steps=len(curve), reason=reason, optimizer=res.optimizer, curve=curve, onset=onset,
                   seconds=time.time() - t0, cancelled=reason == "cancelled", run_optimizer=cfg.optimizer,
                   rule=dataclasses.asdict(rule), plateau_lr=value,
                   bound=dataclasses.asdict(bound) if bound else None, limited_by=limited_by, range_record=record)
    est.advice = preset_advice(est.unet_lr, preset_lr, preset_source)
    if job_dir is not None:
        write_outputs(est, Path(job_dir))
    return est


def run_range_test(backend, scan, cfg, plateau: float, steps: int, callbacks, should_stop) -> list:
    """The range test around the plateau value with the run's optimizer (AdamW when the run itself is
    adaptive: an lr ramp means nothing to D-Adaptation); progress as ``phase="range test"``."""
    from .loop import Progress
    from .range_test import range_test

    run_opt = cfg.optimizer if cfg.optimizer not in PROBE_OPTIMIZERS else "AdamW"
    rcfg = dataclasses.replace(cfg, optimizer=run_opt, unet_lr=plateau, text_encoder_lr=0.0,
                               lr_scheduler="constant", warmup_steps=0, warmup_ratio=0.0, max_steps=steps)
    t0 = time.time()

    def on_step(rec: dict) -> None:
        it_s = rec["step"] / max(time.time() - t0, 1e-9)
        callbacks.emit("on_progress", Progress(rec["step"], steps, 0, rec["loss"], rec["lr"], it_s,
                                               (steps - rec["step"]) / it_s, phase="range test"))

    lo, hi = RANGE_SPAN
    return range_test(backend, scan, rcfg, lo=plateau * lo, hi=plateau * hi, steps=steps, seed=cfg.seed,
                      on_step=on_step, should_stop=should_stop)


def write_outputs(est: Estimate, folder: Path) -> None:
    """``lr-estimate.json`` and ``lr-estimate.png`` in ``folder`` (atomic writes)."""
    from ..workspace import write_json

    folder.mkdir(parents=True, exist_ok=True)
    est.curve_file = folder / CURVE_NAME
    est.plot = plot_curve(est, folder / PLOT_NAME)
    write_json(est.curve_file, {**est.as_dict(), "curve": est.curve, "range_test": est.range_record})


# --------------------------------------------------------------------------------------------- the plot

def _title(est: Estimate) -> str:
    where = {"plateau": f"plateau from step {est.onset}", "cap": "step cap reached, still rising",
             "cancelled": "cancelled", "end": "data ended"}[est.reason]
    head = f"d·lr = {est.d_lr:.3g} ({where}; {est.optimizer}, {est.steps} steps)"
    if est.limited_by == "range test":
        head += f"; proposed {est.unet_lr:.3g} (range test)"
    return head


def limit_text(est: Estimate) -> str:
    """Which limit set the proposal, for the CLI line."""
    if est.limited_by == "range test" and est.bound:
        return (f"capped by the range test: its loss was lowest at lr {est.bound['best_lr']:.3g} and rose from "
                f"{est.bound['rise_lr']:.3g}, so at most {est.bound['value']:.3g}; D-Adaptation's plateau was "
                f"{est.plateau_lr:.3g}")
    if est.bound:
        return f"below the range test's bound {est.bound['value']:.3g}"
    return "the range test saw no rise of the loss" if est.range_record else "no range test"


def plot_curve(est: Estimate, path: Path) -> Path:
    """The d·lr curve on a log axis with the estimate marked: matplotlib when it imports, else PIL."""
    from ..workspace import atomic_path

    points = [(c["step"], c["d_lr"]) for c in est.curve if c["d_lr"] and c["d_lr"] > 0]
    with atomic_path(path) as tmp:
        try:
            _plot_matplotlib(est, points, tmp)
        except ImportError:
            _plot_pil(est, points, tmp)
    return path


def _plot_matplotlib(est: Estimate, points, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: the host's backend is untouched
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], color="#1f77b4", lw=1.6, label="d·lr")
    ax.set_yscale("log")
    if est.onset:
        ax.axvspan(est.onset, est.steps, color="#2ca02c", alpha=0.12, label="flat window")
    ax.axhline(est.d_lr, color="#d62728", ls="--", lw=1, label=f"plateau {est.d_lr:.3g}")
    if est.limited_by == "range test":
        ax.axhline(est.unet_lr, color="#2ca02c", ls="-.", lw=1, label=f"proposed {est.unet_lr:.3g} (range test)")
    ax.set_xlabel("step")
    ax.set_ylabel("d·lr (adapted learning rate)")
    ax.set_title(_title(est), fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(out), format="png")


def _plot_pil(est: Estimate, points, out: Path) -> None:
    """The same plot drawn with PIL (the host venv may lack matplotlib)."""
    from PIL import Image, ImageDraw

    W, H, L, R, T, B = 700, 360, 70, 20, 30, 40
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((L, 8), _title(est), fill="black")
    if points:
        xs = [p[0] for p in points]
        ys = [math.log10(p[1]) for p in points]
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        y0, y1 = math.floor(min(ys)), math.ceil(max(ys))
        y1 = y1 if y1 > y0 else y0 + 1

        def px(x: float, y: float) -> tuple[float, float]:
            return (L + (x - x0) / (x1 - x0) * (W - L - R), T + (y1 - y) / (y1 - y0) * (H - T - B))

        if est.onset:
            d.rectangle([px(est.onset, y1), px(est.steps, y0)], fill=(220, 240, 220))
        for e in range(y0, y1 + 1):  # decade grid lines and labels
            _, yy = px(x0, e)
            d.line([(L, yy), (W - R, yy)], fill=(225, 225, 225))
            d.text((8, yy - 6), f"1e{e}", fill="black")
        d.line([px(x, y) for x, y in zip(xs, ys)], fill=(31, 119, 180), width=2)
        if est.d_lr > 0:
            _, ye = px(x0, math.log10(est.d_lr))
            for xx in range(L, W - R, 12):
                d.line([(xx, ye), (xx + 6, ye)], fill=(214, 39, 40), width=1)
        d.text((L, H - B + 8), f"step {x0}", fill="black")
        d.text((W - R - 70, H - B + 8), f"step {x1}", fill="black")
    d.rectangle([L, T, W - R, H - B], outline="black")
    img.save(out, format="PNG")


# --------------------------------------------------------------------------------------------- CLI

def _args(p: argparse.ArgumentParser) -> None:
    from .. import cli
    from ..config import TrainConfig

    p.add_argument("--data", metavar="DIR", help="kohya train folder (N_name subfolders) or a folder of images "
                                                 "with captions (default: the toy world's demo set)")
    p.add_argument("--output-dir", metavar="DIR", help="where the job folder goes (default: "
                                                       "./lora_trainer_output/<name>)")
    p.add_argument("--json", action="store_true", help="print the estimate as one JSON line at the end")
    p.add_argument("--probe-optimizer", choices=PROBE_OPTIMIZERS, default="DAdaptAdam",
                   help="adaptive optimizer the probe runs at lr 1.0 (default: DAdaptAdam)")
    rule = PlateauRule()
    p.add_argument("--probe-max-steps", type=int, default=rule.max_steps,
                   help=f"stop the probe here even if d·lr still rises (default: {rule.max_steps})")
    p.add_argument("--range-steps", type=int, default=RANGE_STEPS,
                   help=f"steps of the LR range test after the probe, which caps the proposal at the highest lr "
                        f"measured stable (default: {RANGE_STEPS}; 0 skips it)")
    p.add_argument("--probe-resolution", type=int, default=0, metavar="PX",
                   help="image size the probe trains at (default: the config's resolution)")
    p.add_argument("--plateau-window", type=int, default=rule.window,
                   help=f"steps d·lr must stay flat (default: {rule.window})")
    p.add_argument("--plateau-epsilon", type=float, default=rule.epsilon,
                   help=f"relative change allowed over the window (default: {rule.epsilon})")
    cli._common(p)
    cli.add_config_flags(p, TrainConfig)


def _run(args: argparse.Namespace) -> int:
    from .. import cli
    from ..config import TrainConfig
    from ..errors import UserError
    from ..models import load_backend, preset_for
    from .data import scan_dataset
    from .loop import Callbacks

    preset = preset_for(args.base_model)
    cfg = cli.config_from_args(TrainConfig, args, preset)
    try:
        rule = PlateauRule(window=args.plateau_window, epsilon=args.plateau_epsilon,
                           max_steps=args.probe_max_steps, smooth=min(PlateauRule.smooth, args.plateau_window))
    except ValueError as exc:
        raise UserError(f"bad plateau settings: {exc}", "see estimate --help") from None
    if args.range_steps < 0 or args.probe_resolution < 0:
        raise UserError("--range-steps and --probe-resolution must be 0 or more", "see estimate --help")
    data, cfg, out = cli.data_and_output(args, cfg)
    cfg = probe_resolution(cfg, args.probe_resolution)
    scan = scan_dataset(data, cfg.repeats)
    ref_lr, ref_source = reference_lr(preset)
    backend, _ = load_backend(args.base_model, cli._device(args.device))
    print(f"estimating the lr with {args.probe_optimizer} at lr 1.0 on {scan.num_images} images "
          f"({backend.name}, {backend.device.type}); stops when d·lr is flat for {rule.window} steps "
          f"or at step {rule.max_steps}", file=sys.stderr)
    found: dict = {}

    def job(ctx) -> dict:
        bar = cli._Bar()
        cb = Callbacks(on_progress=lambda p: (ctx.progress(p), bar.update(p)), on_log=ctx.log)
        try:
            est = estimate_lr(backend, scan, cfg, ctx.job_dir, optimizer=args.probe_optimizer, rule=rule,
                              callbacks=cb, should_stop=ctx.should_stop, range_steps=args.range_steps,
                              preset_lr=ref_lr, preset_source=ref_source)
        finally:
            bar.close()
        found["est"] = est
        return est.as_dict()

    code = cli.run_job(out, "estimate", dataclasses.asdict(cfg), job)
    est = found.get("est")
    if est is not None:
        if args.json:
            print(json.dumps(est.summary(), ensure_ascii=False))
        else:
            print(f"estimated lr: unet {est.unet_lr:.3g}, text encoder {est.text_encoder_lr:.3g} "
                  f"({_title(est)}; {limit_text(est)}); plot: {est.plot}")
        if est.advice:  # on stderr too: the --json line stays the last line of stdout
            print(f"caveat: {advice_text(est.advice)}", file=sys.stderr)
    return code


def register(commands: dict) -> None:
    commands["estimate"] = ("LR probe: train briefly with D-Adaptation at lr 1.0 until d·lr is flat; prints the "
                            "lr to use", _args, _run)
