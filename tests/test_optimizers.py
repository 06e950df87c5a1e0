"""Every optimizer × schedule builds the class it names (or the documented AdamW8bit → AdamW fallback) and moves
the weights on CPU; Lion8bit without a usable bitsandbytes is a UserError naming the alternatives; the schedules
are the documented functions of the step."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

from lora_trainer.config import OPTIMIZERS, SCHEDULERS
from lora_trainer.errors import UserError
from lora_trainer.training.optim import _quietly, build_optimizer, build_scheduler, lr_lambda

CLASS_OF = {  # optimizer name -> (module prefix, class name) of what it must build
    "AdamW8bit": ("bitsandbytes", "AdamW8bit"),
    "AdamW": ("torch.optim", "AdamW"),
    "Lion8bit": ("bitsandbytes", "Lion8bit"),
    "Adafactor": ("transformers", "Adafactor"),
    "DAdaptAdam": ("dadaptation", "DAdaptAdam"),
    "Prodigy": ("prodigyopt", "Prodigy"),
}
NEEDS = {"DAdaptAdam": "dadaptation", "Prodigy": "prodigyopt", "Adafactor": "transformers"}


def _bnb_usable() -> bool:
    from lora_trainer.training.optim import _bnb_optim, _probe_step

    cls, why = _bnb_optim("AdamW8bit", torch.device("cpu"))
    return cls is not None and not _probe_step(cls, torch.device("cpu"))


BNB_OK = _bnb_usable()


def _groups():
    torch.manual_seed(0)
    # Two groups like the trainer's (UNet, text encoder); one tensor >= 4096 elements so bitsandbytes
    # really keeps 8-bit state for it.
    unet = torch.nn.Linear(128, 64)
    te = torch.nn.Linear(16, 16)
    return unet, te


@pytest.mark.parametrize("schedule", SCHEDULERS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_and_schedule_builds_and_moves_weights(name, schedule):
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed in this venv")
    unet, te = _groups()
    adaptive = name in ("DAdaptAdam", "Prodigy")  # one lr for all groups (the library refuses others)
    groups = [{"params": list(unet.parameters()), "lr": 1.0 if adaptive else 1e-3},
              {"params": list(te.parameters()), "lr": 1.0 if adaptive else 1e-4}]
    before = [p.detach().clone() for p in (*unet.parameters(), *te.parameters())]
    if name == "Lion8bit" and not BNB_OK:
        with pytest.raises(UserError) as e:
            build_optimizer(name, groups, torch.device("cpu"))
        for alt in ("AdamW", "Adafactor", "DAdaptAdam", "Prodigy"):
            assert alt in e.value.hint
        return
    opt, used, warning = build_optimizer(name, groups, torch.device("cpu"))
    if name == "AdamW8bit" and not BNB_OK:
        assert used == "AdamW" and type(opt) is torch.optim.AdamW
        assert warning and warning.startswith("AdamW8bit unavailable, using AdamW at the same lr")
        assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[1]["lr"] == 1e-4  # same lr
    else:
        mod, cls = CLASS_OF[name]
        assert used == name and warning is None
        assert type(opt).__name__ == cls and type(opt).__module__.startswith(mod), type(opt)
    sched = build_scheduler(opt, schedule, total_steps=10, warmup=2)
    x = torch.randn(8, 128)
    for _ in range(3):
        loss = unet(x).pow(2).mean() + te(torch.randn(8, 16)).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    after = [p.detach() for p in (*unet.parameters(), *te.parameters())]
    assert all(torch.isfinite(a).all() for a in after)
    moved = [not torch.equal(a, b) for a, b in zip(after, before)]
    assert all(moved), (name, schedule, moved)


def test_adamw_uses_foreach_on_cpu():
    unet, _ = _groups()
    opt, used, _ = build_optimizer("AdamW", [{"params": list(unet.parameters()), "lr": 1e-3}], torch.device("cpu"))
    assert used == "AdamW" and opt.defaults.get("foreach") is True


def test_fallback_when_bitsandbytes_cannot_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails, as where no native library loads
    unet, _ = _groups()
    groups = [{"params": list(unet.parameters()), "lr": 2e-4}]
    opt, used, warning = build_optimizer("AdamW8bit", groups, torch.device("cpu"))
    assert type(opt) is torch.optim.AdamW and used == "AdamW" and "bitsandbytes cannot load" in warning
    assert opt.param_groups[0]["lr"] == 2e-4
    with pytest.raises(UserError) as e:
        build_optimizer("Lion8bit", groups, torch.device("cpu"))
    assert "Lion8bit needs bitsandbytes" in e.value.message and "AdamW8bit/AdamW" in e.value.hint


def test_unknown_names_are_user_errors():
    unet, _ = _groups()
    with pytest.raises(UserError):
        build_optimizer("SGD", [{"params": list(unet.parameters()), "lr": 1e-3}], torch.device("cpu"))
    with pytest.raises(UserError):
        lr_lambda("exponential", 10, 0)(3)


# --------------------------------------------------------------------------------------------- schedules

def test_schedules_as_functions_of_the_step():
    T, W = 110, 10
    f = {n: lr_lambda(n, T, W, cycles=2, power=2.0) for n in SCHEDULERS}
    # warm-up: linear ramp for all but "constant"
    assert f["constant"](0) == 1.0
    for n in SCHEDULERS[1:]:
        assert f[n](0) == pytest.approx(1 / W) and f[n](W - 1) == pytest.approx(1.0)
    mid = W + (T - W) // 2  # progress 0.5
    assert f["constant_with_warmup"](mid) == 1.0
    assert f["linear"](mid) == pytest.approx(0.5)
    assert f["cosine"](mid) == pytest.approx(0.5)
    assert f["polynomial"](mid) == pytest.approx(0.25)  # (1-0.5)^2
    assert f["cosine_with_restarts"](W + (T - W) // 4) == pytest.approx(0.5)  # half of the first of 2 cycles
    assert f["cosine_with_restarts"](mid) == pytest.approx(1.0)  # the restart
    for n in ("linear", "cosine", "polynomial", "cosine_with_restarts"):
        assert f[n](T) == pytest.approx(0.0, abs=1e-12)


def test_warmup_ratio_becomes_steps_in_the_trainer_formula():
    # The trainer turns warmup_ratio into steps as round(ratio * total); the schedule then ramps over them.
    total, ratio = 200, 0.05
    warm = round(ratio * total)
    f = lr_lambda("cosine", total, warm)
    assert warm == 10 and f(4) == pytest.approx(0.5) and f(10) == pytest.approx(1.0)
    assert f(10 + 95) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_dadapt_probe_uses_adams_bias_correction_like_the_run_it_estimates_for():
    """AdamW and AdamW8bit correct Adam's bias; a probe without it takes 3-10x smaller early steps and d grows to
    make up for it (the toy preset's estimate was 0.040 without, 0.012 with). Same ratio kept in layer_scale."""
    if importlib.util.find_spec("dadaptation") is None:
        pytest.skip("dadaptation is not installed in this venv")
    unet, te = _groups()
    opt, used, _ = build_optimizer("DAdaptAdam", [{"params": list(unet.parameters()), "lr": 1.0},
                                                  {"params": list(te.parameters()), "lr": 0.1}], torch.device("cpu"))
    assert used == "DAdaptAdam"
    assert [g["use_bias_correction"] for g in opt.param_groups] == [True, True]
    assert [g["lr"] for g in opt.param_groups] == [1.0, 1.0]
    assert [g["layer_scale"] for g in opt.param_groups] == pytest.approx([1.0, 0.1])


@pytest.mark.parametrize("name, package", [("DAdaptAdam", "dadaptation"), ("Prodigy", "prodigyopt")])
def test_adaptive_optimizers_print_nothing(name, package, capsys):
    """Both packages print a line when built; on stdout it would land before ``estimate --json``'s last line
    and in the middle of the demo's progress."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed in this venv")
    unet, _ = _groups()
    build_optimizer(name, [{"params": list(unet.parameters()), "lr": 1.0}], torch.device("cpu"))
    assert capsys.readouterr().out == ""
    # only the package's own print is silenced, and only while it builds: stdout itself is left alone
    import sys
    import threading

    started, go_on = threading.Event(), threading.Event()
    cls = type(build_optimizer(name, [{"params": list(unet.parameters()), "lr": 1.0}], torch.device("cpu"))[0])
    mod = sys.modules[cls.__module__]

    class Slow(cls):
        def __init__(self, *a, **k):
            started.set()
            go_on.wait(10)
            super().__init__(*a, **k)

    Slow.__module__ = cls.__module__
    t = threading.Thread(target=lambda: _quietly(Slow, [{"params": list(unet.parameters()), "lr": 1.0}],
                                                 decouple=True))
    t.start()
    assert started.wait(10)
    print("from another thread")  # while the optimizer is being built
    go_on.set()
    t.join(10)
    assert capsys.readouterr().out == "from another thread\n"
    assert "print" not in vars(mod)  # the builtin again
