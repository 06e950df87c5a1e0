"""Bench rows for the training features: each optimizer, gradient checkpointing, torch.compile, batch 1 and 4,
bf16 autocast.

``python -m lora_trainer.bench --only optimizers [--model sd15]``. Every row times our real ``Trainer._step``
on cached latents (the recipe's networks on UNet and text encoder) through the same warm-up the forecast uses,
on the bench's device: the tiny random model (64 px, rank 8) by default, or with ``--model sd15`` a
random-initialised full-size SD1.5 at rank 128, alpha 64 (512 px on CUDA, 256 px elsewhere: the goal of
issue #15 is measured on a GPU). One factor changes per row against the ``base`` row (AdamW, batch 1, no
checkpointing, no compile, the device's default precision: fp16 autocast on CUDA, fp32 on CPU), and
``vs_base`` is its time per image relative to the base. A feature that cannot run here (Lion8bit without
bitsandbytes, inductor without a working compiler) gives a row with ``skipped`` and the reason instead of a
figure. torch.compile's row comes last: its compile time (``first_steps_s``) is the longest.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from typing import Iterator, Optional

import torch


def _variants() -> list[tuple[str, dict]]:
    from ..config import OPTIMIZERS

    rows = [("base", {})]
    rows += [(f"optimizer={name}", {"optimizer": name}) for name in OPTIMIZERS if name != "AdamW"]
    rows += [("gradient_checkpointing=on", {"gradient_checkpointing": True}),
             ("batch=4", {"batch_size": 4}),
             ("mixed_precision=bf16", {"mixed_precision": "bf16"}),
             ("compile=on", {"compile": True})]
    return rows


def _peak(device: torch.device):
    from .forecast import HostPeak

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return contextlib.nullcontext(None)
    return HostPeak()


def time_variant(backend, scan, cfg, steps: int, untimed: int = 2) -> dict:
    """Seconds per step, images per second and peak memory for one config on the warm-up path."""
    from .forecast import time_steps, warm_trainer
    from .loop import compiled_denoise

    dev = backend.device
    with _peak(dev) as hp:
        with warm_trainer(backend, scan, cfg) as (tr, batch):
            ctx = compiled_denoise(backend) if cfg.compile else contextlib.nullcontext()
            with ctx:
                t0 = time.perf_counter()
                sps = time_steps(tr, batch, steps, untimed=untimed)
                first = time.perf_counter() - t0 - sps * steps
            used = tr.result.optimizer
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else hp.peak_mb - hp.before_mb
    return {"s_per_step": sps, "it_s": 1 / sps, "img_s": len(batch) / sps, "peak_mb": peak,
            "first_steps_s": first, "optimizer": used}


def feature_rows(args: argparse.Namespace) -> Iterator[dict]:
    """The rows one by one, so each is printed when measured (a run stopped at its time limit keeps them)."""
    from ..bench import bench_model
    from ..config import TrainConfig
    from ..errors import UserError
    from . import data as D
    from .diffusers_backend import DiffusersBackend
    from .tiny import tiny_dataset

    device = args.device
    model = getattr(args, "model", None) or "tiny"
    steps = 5 if getattr(args, "quick", False) else 20
    parts, shape = bench_model(model, device)
    be = DiffusersBackend(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"], device=device,
                          name=f"{model}-random")
    base = dict(**shape, batch_size=1, optimizer="AdamW", save_fractions=[], sync_every=1000)
    size = shape["resolution"]
    base_per_img: Optional[float] = None
    with tempfile.TemporaryDirectory() as tmp:
        tiny_dataset(tmp, n=4, size=size, repeats=10, name="bench")
        scan = D.scan_dataset(tmp, 1)
        for label, override in _variants():
            cfg = TrainConfig(**{**base, **override})
            name = f"feature {label} {model} {size}px bs{cfg.batch_size} r{cfg.rank} {device.type}"
            try:
                r = time_variant(be, scan, cfg, steps)
            except UserError as exc:
                yield {"row": name, "skipped": exc.message}
                continue
            except Exception as exc:  # noqa: BLE001 - e.g. inductor without a working C++ compiler
                if not cfg.compile:
                    raise
                yield {"row": name, "skipped": f"torch.compile failed here: {type(exc).__name__}: "
                                               f"{str(exc).splitlines()[0][:160] if str(exc) else ''}"}
                continue
            per_img = r["s_per_step"] / cfg.batch_size
            if label == "base":
                base_per_img = per_img
            row = {"row": name, **r}
            if base_per_img:
                row["vs_base"] = per_img / base_per_img
            yield row
