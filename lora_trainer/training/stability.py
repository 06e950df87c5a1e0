"""The highest lr the estimate measured to be stable: a pure rule over the LR range test's record.

D-Adaptation's plateau says where its d·lr settles, not whether the network can bear that lr: on the
embedded toy model it settled at 1.23e-2, where every training breaks (the toy sweep: 0 % at 1.6e-2, 9 % at
1e-2). So after the probe the estimate runs a range test (``range_test.py``: the run's optimizer, an lr
ramped geometrically over ``RANGE_STEPS`` steps, a noise-free evaluation loss after each) and proposes the
smaller of the plateau value and the bound this rule reads from that record.

Why not the probe's own loss: a diffusion model's training loss swings by about ±50 % from step to step with
the random timesteps (on the toy: 0.05–0.39 at the same lr), so a rise of the loss is lost in the noise — a
rising-loss rule on the probe's record put the bound at 1.9e-5 on the toy, from noise alone.

The criterion (``StabilityRule``), over the records ``(lr[t], loss[t])`` of steps ``t = 1..n`` (lr rising):

1. **Smoothing**: ``s[t]`` = mean of the last ``smooth`` losses (from ``t = smooth`` on).
2. **Best so far**: ``b[t] = min(s[smooth..t])``, reached last at step ``a[t]``.
3. **Rising**: the first step ``r`` with ``s[r] > (1 + rise) × b[r]``, or whose loss is not finite.
4. **Bound**: ``lr[a[r]] / margin`` — the lr at the best loss before the rise, divided by ``margin``. The
   range test passes each lr for one step, a run stays at its lr for hundreds, so the lr at the loss minimum
   is the edge, not a training lr; Smith's rule for the range test (Cyclical Learning Rates, 2015) is a
   training lr of 1/3 to 1/4 of the largest lr at which the loss still falls; ``margin`` = 4 is its cautious end.
5. No rise in the record (the loss fell up to the end of the ramp): no bound, and the plateau value stands.

Guarantee (tested on synthetic records): the bound is never above an lr at which the smoothed loss was
already rising, and a record whose loss only falls leaves the plateau value unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class StabilityRule:
    """The rule's parameters (see the module docstring)."""

    smooth: int = 3           # trailing-mean length of the loss
    rise: float = 0.10        # relative rise above the best smoothed loss that counts as rising
    margin: float = 4.0       # the bound is the lr at the best loss divided by this (Smith: 3 to 4)

    def __post_init__(self):
        if self.smooth < 1 or not self.rise > 0 or not self.margin >= 1.0:
            raise ValueError("smooth >= 1, rise > 0 and margin >= 1 are required")


@dataclass(frozen=True)
class Bound:
    """Where the loss started rising and what lr that allows."""

    value: float              # the bound: lr at the best loss ÷ margin
    best_step: int            # step of the best smoothed loss before the rise
    best_lr: float            # lr at that step
    rise_step: int            # first step the smoothed loss counted as rising
    rise_lr: float            # lr there


def stable_bound(record: Sequence[dict], rule: Optional[StabilityRule] = None) -> Optional[Bound]:
    """The bound for a range-test record ``[{"step", "lr", "loss"}, ...]`` (lr rising), or None when the loss
    never rose."""
    rule = rule or StabilityRule()
    losses: list[float] = []
    best = math.inf
    best_at: Optional[dict] = None
    for rec in record:
        loss, lr = rec.get("loss"), rec.get("lr")
        if lr is None or not math.isfinite(lr):
            continue
        if loss is None or not math.isfinite(loss):  # diverged: rising by definition
            return _bound(best_at, rec, rule)
        losses.append(float(loss))
        if len(losses) < rule.smooth:
            continue
        s = sum(losses[-rule.smooth:]) / rule.smooth
        if s <= best:  # a tie moves the best to the larger lr: the loss was no worse there
            best, best_at = s, rec
        elif s > (1 + rule.rise) * best:
            return _bound(best_at, rec, rule)
    return None


def _bound(best_at: Optional[dict], rising: dict, rule: StabilityRule) -> Optional[Bound]:
    if best_at is None:  # broke before a full smoothing window: nothing measured as stable
        return None
    return Bound(best_at["lr"] / rule.margin, int(best_at["step"]), float(best_at["lr"]), int(rising["step"]),
                 float(rising["lr"]))


def propose(plateau_value: float, bound: Optional[Bound]) -> tuple[float, str]:
    """(the proposed UNet lr, what set it: "plateau" — D-Adaptation's value — or "range test")."""
    if bound is not None and bound.value < plateau_value:
        return bound.value, "range test"
    return plateau_value, "plateau"


def preset_advice(estimate: float, preset: Optional[float], source: str = "the preset") -> Optional[dict]:
    """When the estimate and the preset's lr differ by more than ×2: which to use and why, else None.

    The lower one is recommended: an lr too high breaks a LoRA (the toy sweep: 0 % at ×4 its best), an lr too
    low only learns more slowly (56 % at ×1/4), which more steps make up for."""
    if not preset or preset <= 0 or not estimate or estimate <= 0:
        return None
    ratio = estimate / preset
    if 0.5 <= ratio <= 2.0:
        return None
    use = "preset" if ratio > 2.0 else "estimate"
    return {"preset_lr": preset, "ratio": ratio, "recommend": use, "source": source,
            "lr": preset if use == "preset" else estimate}


def advice_text(adv: dict) -> str:
    """The caveat as one English line (CLI; the tab translates its own)."""
    lower = "the preset's" if adv["recommend"] == "preset" else "the estimate's"
    return (f"the estimate is ×{adv['ratio']:.2f} of {adv['source']} lr {adv['preset_lr']:.3g}, more than ×2 "
            f"apart: use {lower} {adv['lr']:.3g} (the lower: too high an lr breaks a LoRA, too low only learns "
            f"slower)")
