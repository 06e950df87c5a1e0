"""The LR range test (Smith 2015; fastai's ``lr_find``) on the real network with the run's own optimizer.

The LoRA is trained from fresh weights for ``steps`` steps at an lr that grows geometrically from
``lo`` to ``hi``; after every step the loss of a fixed evaluation set (every image once, a fixed timestep
and fixed noise per image, spread evenly over the schedule) is measured without gradients. That loss has no
sampling noise — the training loss of a diffusion model swings by ±50 % from step to step with the random
timesteps, which hides the rise a range test looks for — so its record shows where the lr starts to hurt.
``stability.stable_bound`` reads the bound from the record. The weights are thrown away; the base model is
left as it was (``frozen`` and ``network.applied``, as in the forecast's warm-up).
"""

from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

EVAL_MAX = 16      # evaluation examples at most (images beyond are left out: the cost grows with them)


def lr_at(step: int, steps: int, lo: float, hi: float) -> float:
    """The lr of step ``step`` (1-based) on the geometric ramp from ``lo`` (step 1) to ``hi`` (step ``steps``)."""
    if steps <= 1:
        return lo
    return lo * (hi / lo) ** ((step - 1) / (steps - 1))


def range_test(backend, scan, cfg, *, lo: float, hi: float, steps: int = 60, seed: int = 0,
               on_step: Optional[Callable[[dict], None]] = None,
               should_stop: Callable[[], bool] = lambda: False) -> list[dict]:
    """``[{"step", "lr", "loss"}]``: the evaluation loss after each step of the ramp (``loss`` is the mean
    over the fixed evaluation set; ``train_loss`` the step's own). Stops early when the evaluation loss is
    not finite or above four times its best (the range test's classic stop: it has diverged)."""
    from . import data as D
    from .backend import frozen
    from .loop import Trainer

    with tempfile.TemporaryDirectory(prefix="lora-trainer-range-") as tmp:
        tr = Trainer(backend, scan, cfg, Path(tmp), name="range-test", should_stop=should_stop)
        tr.alphas = backend.alphas_cumprod().to(tr.device, torch.float32)
        tr.v_pred = backend.prediction_type == "v_prediction"
        with frozen(*backend.modules().values()):
            tr._prepare_data()
            tr.total = steps
            tr._prepare_network()
            ev = _eval_set(tr, seed)
            # _prepare_network's groups: the UNet's, then the text encoder's at its ratio to the UNet's lr
            te_ratio = cfg.te_lr() / cfg.unet_lr if cfg.unet_lr > 0 else cfg.te_lr_ratio
            ratios = [1.0, te_ratio] if cfg.train_unet else [te_ratio]
            out: list[dict] = []
            best = math.inf
            rng = random.Random(cfg.seed)
            batches: list = []
            try:
                with tr.network.applied():
                    for k in range(1, steps + 1):
                        if should_stop():
                            break
                        if not batches:
                            batches = D.epoch_batches(tr.bucket_of, tr.repeats, cfg.batch_size, rng)
                        lr = lr_at(k, steps, lo, hi)
                        for g, r in zip(tr.optimizer.param_groups, ratios):
                            g["lr"] = lr * r  # set before the step; the scheduler's own step resets it after
                        train_loss = float(tr._step(batches.pop(0), False))
                        loss = _eval_loss(tr, ev)
                        rec = {"step": k, "lr": lr, "loss": loss, "train_loss": train_loss}
                        out.append(rec)
                        if on_step:
                            on_step(rec)
                        if not math.isfinite(loss) or loss > 4 * best:
                            break
                        best = min(best, loss)
            finally:
                tr.optimizer.zero_grad(set_to_none=True)
                del tr.optimizer, tr.network
    return out


def _eval_set(tr, seed: int) -> list:
    """Fixed (latents, timesteps, noise, captions) batches: each image once (at most ``EVAL_MAX``), timesteps
    evenly spread over the schedule, noise from ``seed``; grouped by bucket so a batch has one shape."""
    n = min(len(tr.latents), EVAL_MAX)
    T = tr.alphas.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    by_shape: dict = {}
    for i in range(n):
        t = int((i + 0.5) * T / n)
        lat = tr.latents[i].to(tr.device)
        noise = torch.randn(lat.shape, generator=gen).to(tr.device)
        by_shape.setdefault(tuple(lat.shape), []).append((lat, t, noise, tr.scan.items[i].caption))
    out = []
    for group in by_shape.values():
        for j in range(0, len(group), max(1, tr.cfg.batch_size)):
            part = group[j:j + max(1, tr.cfg.batch_size)]
            out.append((torch.stack([p[0] for p in part]), torch.tensor([p[1] for p in part], device=tr.device),
                        torch.stack([p[2] for p in part]), [p[3] for p in part]))
    return out


@torch.no_grad()
def _eval_loss(tr, ev) -> float:
    total, count = 0.0, 0
    for lat, t, noise, captions in ev:
        pred, target = tr.predict(lat, noise, t, captions)
        total += float(F.mse_loss(pred.float(), target.float(), reduction="sum")) / lat[0].numel()
        count += lat.shape[0]
    return total / max(1, count)
