"""When has the d·lr curve of an adaptive optimizer flattened? A pure, documented stopping rule.

Users of kohya's D-Adaptation runs open TensorBoard, wait until ``lr/d*lr`` "flattens", read the value and
kill the run. This module is that judgement as a rule that can be tested on curves with a known onset.

The criterion (``PlateauRule``), evaluated after every step ``n`` (1-based) over the values ``v[1..n]``:

1. **Smoothing**: ``m[t]`` = median of the last ``smooth`` values ``v[t-smooth+1..t]`` (a trailing median:
   a single spike does not move it, and on a rising curve it lags by ``(smooth-1)/2`` steps).
2. **Flat window**: the curve has plateaued at step ``n`` when, over the last ``window`` smoothed values
   ``m[n-window+1..n]``, ``(max - min) / m[n] <= epsilon`` — it changed by at most ``epsilon`` (relative)
   over ``window`` steps.
3. **Left its start**: ``m[n] >= min_rise * m[smooth]``. D-Adaptation starts from a tiny ``d0`` (1e-6) and
   can sit there for some steps before it grows; that flat start is not the plateau the user waits for.
4. **Enough history**: ``n >= window + smooth - 1`` (every value in the window is a full median).
5. **Cap**: at ``n = max_steps`` the probe stops anyway (reason ``"cap"``) and reports the current ``m[n]``.

Guarantee (tested): for a curve that rises by more than ``epsilon`` over every ``window`` steps before a
step ``t0`` and is constant (or noisy within the tolerance) from ``t0`` on, the rule fires at a step ``n``
with ``t0 <= n <= t0 + window + smooth - 2``: never before the onset, and within its window after it.
For a curve that approaches its level smoothly, the onset is by definition the first step where the
smoothed curve's relative change over the trailing window is at most ``epsilon``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import median
from typing import Iterable, Optional, Sequence


@dataclass(frozen=True)
class PlateauRule:
    """The stopping rule's parameters (see the module docstring for the exact criterion)."""

    window: int = 40          # steps the smoothed curve must stay within ``epsilon``
    epsilon: float = 0.03     # allowed relative change (max-min)/last over the window
    smooth: int = 5           # trailing-median length
    min_rise: float = 2.0     # the smoothed curve must have grown this many times its starting level
    max_steps: int = 600      # the cap: stop here even if still rising

    def __post_init__(self):
        if self.window < 2 or self.smooth < 1 or self.max_steps < 1:
            raise ValueError("window >= 2, smooth >= 1 and max_steps >= 1 are required")
        if not (self.epsilon > 0 and self.min_rise >= 1.0):
            raise ValueError("epsilon > 0 and min_rise >= 1 are required")

    @property
    def latest_fire_after_onset(self) -> int:
        """How many steps after a sharp onset the rule fires at the latest (clean curve)."""
        return self.window + self.smooth - 2


@dataclass(frozen=True)
class Verdict:
    """Why and where the probe stops. ``value`` is the smoothed d·lr at ``step``."""

    reason: str               # "plateau" or "cap"
    step: int                 # 1-based step at which the rule fired
    value: float
    window_start: int         # first step of the flat window (``step - window + 1``; for "cap" the same formula)
    rel_change: float         # (max-min)/last of the smoothed window at ``step`` (inf before a full window)


@dataclass
class PlateauDetector:
    """The rule applied incrementally, one value per step (what the LR probe feeds from ``on_log``)."""

    rule: PlateauRule = field(default_factory=PlateauRule)
    values: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    verdict: Optional[Verdict] = None

    def update(self, value: float) -> Optional[Verdict]:
        """Add the next step's value; returns the verdict the first time the rule fires, else None.

        A non-finite or missing value repeats the previous one (a step with no reading is not a change).
        """
        if self.verdict is not None:
            return None
        if value is None or not math.isfinite(value):
            if not self.values:
                return None
            value = self.values[-1]
        r = self.rule
        self.values.append(float(value))
        self.smoothed.append(median(self.values[-r.smooth:]))
        n = len(self.values)
        m = self.smoothed
        rel = math.inf
        if n >= r.window + r.smooth - 1:
            win = m[-r.window:]
            last = m[-1]
            rel = (max(win) - min(win)) / last if last > 0 else math.inf
            risen = last >= r.min_rise * m[r.smooth - 1]
            if rel <= r.epsilon and risen:
                self.verdict = Verdict("plateau", n, last, n - r.window + 1, rel)
                return self.verdict
        if n >= r.max_steps:
            self.verdict = Verdict("cap", n, m[-1], max(1, n - r.window + 1), rel)
            return self.verdict
        return None

    @property
    def fired(self) -> bool:
        return self.verdict is not None


def find_plateau(values: Iterable[float], rule: Optional[PlateauRule] = None) -> Optional[Verdict]:
    """Run the rule over a whole curve; the first verdict, or None when the curve ends before it fires."""
    det = PlateauDetector(rule or PlateauRule())
    for v in values:
        verdict = det.update(v)
        if verdict is not None:
            return verdict
    return None


def relative_changes(values: Sequence[float], rule: PlateauRule) -> list[float]:
    """The windowed relative change of the smoothed curve at every step (inf before a full window);
    what the plot shows under the curve and what the tests use to locate a smooth curve's onset."""
    m = [median(values[max(0, i - rule.smooth + 1):i + 1]) for i in range(len(values))]
    out = []
    for n in range(1, len(values) + 1):
        if n < rule.window + rule.smooth - 1 or m[n - 1] <= 0:
            out.append(math.inf)
            continue
        win = m[n - rule.window:n]
        out.append((max(win) - min(win)) / m[n - 1])
    return out
