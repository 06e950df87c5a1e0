"""The rule that caps the LR estimate at what its range test measured stable (``training/stability.py``), on
synthetic records with a known answer, and the caveat when the estimate and the preset are more than ×2 apart.
Pure functions: no torch, both profiles."""

from __future__ import annotations

import math

import pytest

from lora_trainer.training.stability import StabilityRule, advice_text, preset_advice, propose, stable_bound

RULE = StabilityRule(smooth=3, rise=0.10, margin=4.0)


def ramp(losses, lo=1e-4, factor=10 ** (1 / 20)):
    """A range-test record: lr rising ×10 every 20 steps from ``lo``, the given losses."""
    return [{"step": i + 1, "lr": lo * factor ** i, "loss": v} for i, v in enumerate(losses)]


def valley(n_down, n_up, start=0.10, low=0.06, blow=3.0):
    """Loss falling linearly to ``low`` over ``n_down`` steps, then rising geometrically to ``blow``×."""
    down = [start - (start - low) * i / (n_down - 1) for i in range(n_down)]
    up = [low * blow ** ((i + 1) / n_up) for i in range(n_up)]
    return down + up


CASES = [
    # (name, losses, best step expected (None = no bound))
    ("valley: best at the bottom", valley(48, 8), 48),
    ("falls to the end: no bound", valley(60, 0), None),
    ("diverges to NaN right after the bottom", valley(30, 0) + [float("nan")], 30),
    ("flat, then a rise: the last flat step", [0.1] * 20 + [0.1 * 1.5 ** i for i in range(1, 6)], 20),
    ("noise within 10 % is not a rise", [0.1 * (1 + 0.05 * (-1) ** i) for i in range(60)], None),
    ("broke before a full window: nothing measured stable", [0.1, float("inf")], None),
]


@pytest.mark.parametrize("name,losses,best", CASES, ids=[c[0] for c in CASES])
def test_bound_is_the_lr_at_the_best_loss_before_the_rise_over_the_margin(name, losses, best):
    rec = ramp(losses)
    b = stable_bound(rec, RULE)
    if best is None:
        assert b is None
        return
    assert b is not None and b.best_step == best, (name, b)
    assert b.value == pytest.approx(rec[best - 1]["lr"] / RULE.margin)
    # never a value where the smoothed loss was already rising: below the lr at the first rising step
    assert b.value < b.rise_lr and b.best_lr < b.rise_lr


def test_the_bound_caps_the_plateau_only_when_lower():
    rec = ramp(valley(48, 8))
    b = stable_bound(rec, RULE)
    # the toy's case: D-Adaptation's plateau 1.23e-2 sits at the range test's edge (the loss minimum);
    # the proposal is the bound, a quarter of it
    assert propose(b.best_lr, b) == (pytest.approx(b.best_lr / 4), "range test")
    assert propose(b.value / 10, b) == (pytest.approx(b.value / 10), "plateau")  # plateau already lower
    assert propose(0.01, None) == (0.01, "plateau")


TOY_SWEEP = {2.5e-4: 0.010, 5e-4: 0.094, 1e-3: 0.557, 2e-3: 0.797, 4e-3: 0.891, 8e-3: 0.828, 1.6e-2: 0.0,
             3.2e-2: 0.0}


def test_toy_range_record_proposes_inside_the_sweeps_good_region():
    """The range test's record measured on the toy (README, seed 42: loss lowest at lr 2.45e-2, +16 % at the
    next step), reduced to its shape: the proposal is within ×2 of the sweep's best (4e-3) and below the lrs
    where the sweep found nothing (1.6e-2) — today's code proposed the plateau 1.23e-2, in that region."""
    lrs = [1e-4 * (1000 ** (1 / 59)) ** i for i in range(56)]
    losses = [0.103 - 0.041 * min(1.0, (math.log10(lr) + 4) / math.log10(245)) for lr in lrs[:48]]
    losses += [0.0721, 0.0837, 0.1067, 0.1066, 0.1261, 0.1475, 0.3426, 0.9][:len(lrs) - 48]
    rec = [{"step": i + 1, "lr": lr, "loss": v} for i, (lr, v) in enumerate(zip(lrs, losses))]
    lr, by = propose(1.23e-2, stable_bound(rec))
    assert by == "range test" and 4e-3 / 2 <= lr <= 4e-3 * 2
    assert min(k for k, v in TOY_SWEEP.items() if v == 0.0) > lr


@pytest.mark.parametrize("estimate,preset,recommend", [
    (1.23e-2, 4e-3, "preset"),      # ×3.1 above: the lower one, the preset
    (1e-3, 4e-3, "estimate"),       # ×0.25 below: the estimate is the lower one
    (6e-3, 4e-3, None),             # ×1.5: no caveat
    (8e-3, 4e-3, None),             # ×2 exactly: no caveat
    (1e-3, None, None),             # no preset lr: nothing to compare
])
def test_preset_caveat_when_more_than_x2_apart(estimate, preset, recommend):
    adv = preset_advice(estimate, preset)
    if recommend is None:
        assert adv is None
        return
    assert adv["recommend"] == recommend and adv["lr"] == min(estimate, preset)
    text = advice_text(adv)
    assert "more than ×2" in text and f"{min(estimate, preset):.3g}" in text


def test_rule_refuses_nonsense():
    for bad in (dict(smooth=0), dict(rise=0.0), dict(margin=0.5)):
        with pytest.raises(ValueError):
            StabilityRule(**bad)
