"""The plateau rule on synthetic d·lr curves with a known onset: it fires within its window after the onset,
never before it, and at the cap when the curve is still rising."""

from __future__ import annotations

import math
import random

import pytest

from lora_trainer.training.plateau import PlateauDetector, PlateauRule, find_plateau, relative_changes

RULE = PlateauRule(window=30, epsilon=0.03, smooth=5, min_rise=2.0, max_steps=500)


def dadapt_like(onset: int, n: int, level: float = 3.6e-5, growth: float = 1.08, start_flat: int = 0) -> list[float]:
    """d·lr as D-Adaptation draws it: flat at d0 for ``start_flat`` steps, geometric growth, constant from
    ``onset`` (1-based) on."""
    out = []
    for step in range(1, n + 1):
        if step >= onset:
            out.append(level)
        else:
            k = max(0, step - start_flat)
            rise_steps = max(1, onset - start_flat)
            out.append(level * growth ** (k - rise_steps))
    return out


@pytest.mark.parametrize("onset", [20, 57, 140, 333])
def test_clean_curve_fires_within_window_after_onset(onset):
    curve = dadapt_like(onset, onset + 200)
    v = find_plateau(curve, RULE)
    assert v is not None and v.reason == "plateau"
    assert onset <= v.step <= onset + RULE.latest_fire_after_onset, (onset, v)
    assert v.value == pytest.approx(3.6e-5)
    assert v.window_start == v.step - RULE.window + 1


def test_flat_start_at_d0_is_not_a_plateau():
    # D-Adaptation can sit at d0 for many steps: longer than the window, still not the plateau.
    curve = dadapt_like(onset=150, n=300, start_flat=60, level=1e-4)
    curve = [max(c, 1e-6) for c in curve]
    for i in range(60):
        curve[i] = 1e-6
    v = find_plateau(curve, RULE)
    assert v.reason == "plateau" and 150 <= v.step <= 150 + RULE.latest_fire_after_onset


@pytest.mark.parametrize("seed", range(8))
def test_noisy_curve_fires_after_onset_and_within_window(seed):
    rng = random.Random(seed)
    onset = rng.randint(40, 200)
    clean = dadapt_like(onset, onset + 150, growth=1.06)
    noisy = [c * (1 + rng.uniform(-0.006, 0.006)) for c in clean]
    for i in rng.sample(range(len(noisy)), 6):  # occasional spikes: the median ignores them
        noisy[i] *= 3.0
    v = find_plateau(noisy, RULE)
    assert v is not None and v.reason == "plateau", v
    assert onset <= v.step <= onset + RULE.latest_fire_after_onset, (onset, v)
    assert v.value == pytest.approx(clean[-1], rel=0.02)


def test_still_rising_curve_stops_at_the_cap():
    curve = [1e-6 * 1.02 ** i for i in range(1000)]  # +2%/step: 81% per window, never flat
    v = find_plateau(curve, RULE)
    assert v.reason == "cap" and v.step == RULE.max_steps
    assert v.value == pytest.approx(curve[RULE.max_steps - 3])  # median of the last 5 of a rising curve


def test_smooth_saturation_fires_exactly_where_the_windowed_change_drops_below_epsilon():
    curve = [1e-4 * (1 - math.exp(-(i + 1) / 25.0)) for i in range(600)]
    changes = relative_changes(curve, RULE)
    onset = next(n for n, c in enumerate(changes, start=1) if c <= RULE.epsilon)
    v = find_plateau(curve, RULE)
    assert v.reason == "plateau" and v.step == onset
    assert all(c > RULE.epsilon for c in changes[:onset - 1])  # never before


def test_incremental_detector_matches_whole_curve_and_fires_once():
    curve = dadapt_like(80, 300)
    det = PlateauDetector(RULE)
    verdicts = [det.update(x) for x in curve]
    fired = [v for v in verdicts if v is not None]
    assert len(fired) == 1 and fired[0] == find_plateau(curve, RULE) and det.fired


def test_missing_values_repeat_the_previous_one():
    curve = dadapt_like(50, 200)
    holes = [None if i % 7 == 3 and i > 0 else x for i, x in enumerate(curve)]
    v = find_plateau(holes, RULE)
    assert v.reason == "plateau" and 50 <= v.step <= 50 + RULE.latest_fire_after_onset


def test_curve_shorter_than_window_gives_no_verdict_and_rule_validates():
    assert find_plateau([1e-5] * 10, RULE) is None
    with pytest.raises(ValueError):
        PlateauRule(window=1)
    with pytest.raises(ValueError):
        PlateauRule(epsilon=0)
