"""Resumable training state, without pickle: tensors in safetensors, everything else in JSON.

``job_dir/state/step000040.safetensors`` + ``step000040.json`` hold the network, the optimizer (including
bitsandbytes' nested quantisation state), the scheduler, the grad scaler, the RNG states and the position in
the data order; ``state/latest.json``, written last and atomically, names the newest complete pair. A crash
(even kill -9) at any moment leaves the previous pair usable, and nothing half-written under a final name.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import UserError
from ..workspace import write_bytes, write_json

STATE_VERSION = 1


def flatten(obj: Any, tensors: dict[str, torch.Tensor], path: str = "t", _seen: Optional[dict] = None) -> Any:
    """JSON-able structure with tensors replaced by ``{"__tensor__": key}`` (stored in ``tensors``).

    A tensor met twice (bitsandbytes shares one quantisation map between parameters' states) is stored once
    and referenced twice, so it is shared again after loading; any other tensor over storage already stored
    is copied (safetensors refuses tensors that share memory)."""
    seen = {} if _seen is None else _seen
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        ident = (t.data_ptr(), t.dtype, tuple(t.shape))
        storage = t.untyped_storage().data_ptr()
        if ident in seen:
            return {"__tensor__": seen[ident]}
        if storage in seen:
            t = t.clone()
            storage = t.untyped_storage().data_ptr()
            ident = (t.data_ptr(), t.dtype, tuple(t.shape))
        tensors[path] = t
        seen[ident], seen[storage] = path, path
        return {"__tensor__": path}
    if isinstance(obj, dict):
        return {"__dict__": [[flatten(k, tensors, f"{path}.k{i}", seen), flatten(v, tensors, f"{path}.{i}", seen)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(v, tensors, f"{path}.{i}", seen) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(v, tensors, f"{path}.{i}", seen) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}  # JSON has no inf/nan (D-Adaptation's growth_rate is inf)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in training state")


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__float__" in obj:
            return float(obj["__float__"])
        if "__tuple__" in obj:
            return tuple(unflatten(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in obj["__dict__"]}
        raise ValueError("malformed training state")
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
    return obj


def _py_random_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def save_state(state_dir: Path, *, step: int, epoch: int, batch_index: int, micro: int, network, optimizer,
               scheduler, scaler, gen: torch.Generator, rng: random.Random, keep: int = 1) -> Path:
    """Write one complete state for ``step`` and point ``latest.json`` at it; keep the newest ``keep``."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    meta = {
        "version": STATE_VERSION, "step": step, "epoch": epoch, "batch_index": batch_index, "micro": micro,
        "network": flatten({k: v for k, v in network.state_dict().items()}, tensors, "net"),
        "optimizer": flatten(optimizer.state_dict(), tensors, "opt"),
        "scheduler": flatten({k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}, tensors, "sch"),
        "scaler": flatten(scaler.state_dict(), tensors, "scl") if scaler is not None else None,
        "gen": flatten(gen.get_state(), tensors, "gen"),
        "rng": _py_random_state(rng),
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    stem = f"step{step:06d}"
    write_bytes(state_dir / f"{stem}.safetensors", save(tensors))
    write_json(state_dir / f"{stem}.json", meta)
    write_json(state_dir / "latest.json", {"version": STATE_VERSION, "stem": stem, "step": step})
    old = sorted(p for p in state_dir.glob("step*.json"))
    for p in old[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
        p.with_suffix(".safetensors").unlink(missing_ok=True)
    return state_dir / f"{stem}.json"


def latest_state(state_dir: Path) -> Optional[Path]:
    marker = state_dir / "latest.json"
    if not marker.is_file():
        return None
    stem = json.loads(marker.read_text(encoding="utf-8"))["stem"]
    p = state_dir / f"{stem}.json"
    return p if p.is_file() and p.with_suffix(".safetensors").is_file() else None


def load_state(path: Path, *, network, optimizer, scheduler, scaler, gen: torch.Generator,
               rng: random.Random) -> dict:
    """Restore everything ``save_state`` wrote; returns ``{"step", "epoch", "batch_index", "micro"}``."""
    from safetensors.torch import load_file

    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("version") != STATE_VERSION:
        raise UserError(f"training state {path.name} has version {meta.get('version')}, expected {STATE_VERSION}",
                        "resume with the LoRA Trainer version that wrote it, or start a new run")
    tensors = load_file(str(path.with_suffix(".safetensors")))
    network.load_state_dict(unflatten(meta["network"], tensors))
    optimizer.load_state_dict(unflatten(meta["optimizer"], tensors))
    sched = unflatten(meta["scheduler"], tensors)
    sched["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)
    scheduler.load_state_dict(sched)
    if scaler is not None and meta["scaler"] is not None:
        scaler.load_state_dict(unflatten(meta["scaler"], tensors))
    gen.set_state(unflatten(meta["gen"], tensors))
    version, internal, gauss = meta["rng"]
    rng.setstate((version, tuple(internal), gauss))
    return {k: meta[k] for k in ("step", "epoch", "batch_index", "micro")}
