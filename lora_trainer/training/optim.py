"""Optimizers and learning-rate schedules, with the documented 8-bit fallback.

AdamW8bit falls back to AdamW at the same lr (one warning) where bitsandbytes cannot load or cannot step
on this device (the host's 0.45.x on CPU); a fallback never changes the optimizer family, so Lion8bit
without bitsandbytes is an error naming the alternatives.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from typing import Iterable, Optional

import torch

from ..errors import UserError

log = logging.getLogger("lora_trainer")


def _bnb_optim(name: str, device: torch.device):
    """bitsandbytes' optimizer class, or (None, reason)."""
    try:
        import bitsandbytes as bnb  # noqa: F401 - import errors are the point
        cls = getattr(bnb.optim, name)
    except Exception as exc:  # noqa: BLE001 - any failure to load means "not available"
        return None, f"bitsandbytes cannot load ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return cls, ""


def _probe_step(cls, device: torch.device, **kw) -> str:
    """Take one step on a tiny tensor: bitsandbytes 0.45 imports on CPU but fails when stepping."""
    try:
        p = torch.nn.Parameter(torch.zeros(4096 * 2, device=device))
        p.grad = torch.ones_like(p)
        cls([p], lr=1e-3, **kw).step()
        return ""
    except Exception as exc:  # noqa: BLE001
        return f"bitsandbytes cannot step on {device.type} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"


@functools.lru_cache(maxsize=None)
def _eightbit_fallback(device: str) -> str:
    cls, why = _bnb_optim("AdamW8bit", torch.device(device))
    return why or _probe_step(cls, torch.device(device))


def eightbit_fallback(device) -> str:
    """Why AdamW8bit would fall back to AdamW on ``device`` ("" when it runs there): the same load and
    one-step probe ``build_optimizer`` makes, once per device type, so the tab can say it in the option
    before a run (the recipe proposes AdamW8bit)."""
    return _eightbit_fallback(torch.device(device).type)


def build_optimizer(name: str, param_groups: list[dict], device: torch.device,
                    weight_decay: float = 0.01) -> tuple[torch.optim.Optimizer, str, Optional[str]]:
    """(optimizer, the name actually used, a warning or None)."""
    warning = None
    if name in ("AdamW8bit", "Lion8bit"):
        cls, why = _bnb_optim(name, device)
        if cls is not None:
            why = _probe_step(cls, device)
        if not why:
            return cls(param_groups, weight_decay=weight_decay), name, None
        if name == "Lion8bit":
            raise UserError(f"Lion8bit needs bitsandbytes, which is not usable here: {why}",
                            "choose AdamW8bit/AdamW, Adafactor, DAdaptAdam or Prodigy")
        warning = f"AdamW8bit unavailable, using AdamW at the same lr: {why}"
        log.warning(warning)
        name = "AdamW"
    if name == "AdamW":
        kw: dict = {"weight_decay": weight_decay}
        if device.type == "cuda":
            kw["fused"] = True
        else:
            kw["foreach"] = True
        return torch.optim.AdamW(param_groups, **kw), name, warning
    if name == "Adafactor":
        try:
            from transformers.optimization import Adafactor
        except ImportError as exc:
            raise UserError("Adafactor needs transformers", "install transformers or pick AdamW") from exc
        return Adafactor(param_groups, scale_parameter=False, relative_step=False, warmup_init=False,
                         weight_decay=weight_decay), name, None
    if name == "DAdaptAdam":
        try:
            from dadaptation import DAdaptAdam
        except ImportError as exc:
            raise UserError("DAdaptAdam needs the dadaptation package", "pip install dadaptation") from exc
        # D-Adaptation takes one lr for all groups; a group's own ratio goes into its layer_scale.
        top = max(g["lr"] for g in param_groups) or 1.0
        groups = [{**g, "lr": top, "layer_scale": g["lr"] / top} for g in param_groups]
        # Adam's bias correction on, as in the AdamW/AdamW8bit run the estimate is for: without it the
        # early steps are 3-10x smaller and d grows to make up for it (toy preset: d·lr 0.040 without,
        # 0.012 with; the three-seed LR sweep's best is 0.004, see README "The LR estimate").
        return _quietly(DAdaptAdam, groups, weight_decay=weight_decay, decouple=True,
                        use_bias_correction=True), name, None
    if name == "Prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError as exc:
            raise UserError("Prodigy needs the prodigyopt package", "pip install prodigyopt") from exc
        top = max(g["lr"] for g in param_groups)
        if any(g["lr"] != top for g in param_groups):
            warning = "Prodigy adapts one learning rate for all parts: the text encoder uses the UNet's"
            log.warning(warning)
        groups = [{**g, "lr": top} for g in param_groups]
        return _quietly(Prodigy, groups, weight_decay=weight_decay, decouple=True), name, warning
    raise UserError(f"unknown optimizer {name!r}", "see --help for the choices")


def _quietly(cls, *args, **kwargs):
    """Build an optimizer whose constructor prints ("Using decoupled weight decay": dadaptation, prodigyopt)
    without it reaching stdout, where it would land in the demo's progress and before ``estimate --json``'s
    last line. Only the print of the optimizer's own module is silenced (a module global shadows the
    builtin), not stdout: a print from another thread meanwhile (the WebUI's console) still shows."""
    mod = vars(sys.modules[cls.__module__])
    had, before = "print" in mod, mod.get("print")
    mod["print"] = lambda *a, **k: None
    try:
        return cls(*args, **kwargs)
    finally:
        if had:
            mod["print"] = before
        else:
            del mod["print"]


def lr_lambda(name: str, total_steps: int, warmup: int, cycles: int = 1, power: float = 1.0):
    """The multiplier of the base lr at each step, as a pure function of the step."""
    total = max(1, total_steps)

    def warm(step: int) -> Optional[float]:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return None

    def f(step: int) -> float:
        w = warm(step)
        if w is not None and name != "constant":
            return w
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if name in ("constant", "constant_with_warmup"):
            return 1.0
        if name == "linear":
            return max(0.0, 1.0 - progress)
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if name == "cosine_with_restarts":
            if progress >= 1.0:
                return 0.0
            return 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0)))
        if name == "polynomial":
            return max(0.0, (1.0 - progress)) ** power
        raise UserError(f"unknown lr scheduler {name!r}", "see --help for the choices")

    return f


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup: int,
                    cycles: int = 1, power: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(name, total_steps, warmup, cycles, power))


def trainable(params: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [p for p in params if p.requires_grad]
