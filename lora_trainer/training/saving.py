"""Kohya-format LoRA files: tensors, the ``ss_*``/``modelspec.*`` metadata loaders read, the sidecar.

Every tensor is checked finite before anything is written, and files are written atomically, so no file
with a non-finite weight and no half-written file ever exists under a final name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from .. import __version__
from ..errors import NonFiniteLoss
from ..workspace import write_bytes, write_json

SAVE_DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}

ARCHITECTURES = {  # modelspec.architecture, as Forge and the SAI model spec name them
    "sd1": "stable-diffusion-v1/lora",
    "sd2": "stable-diffusion-v2-512/lora",
    "sd2-v": "stable-diffusion-v2-768-v/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
}
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sd2-v": "sd_v2", "sdxl": "sdxl_base_v1-0"}


def addnet_hash(serialized: bytes) -> str:
    """kohya's "addnet" hash: sha256 of everything after the safetensors header (WEBUI_API.md §6.2)."""
    n = int.from_bytes(serialized[:8], "little")
    return hashlib.sha256(serialized[8 + n:]).hexdigest()


def config_metadata(cfg) -> dict[str, str]:
    """The ``ss_*`` keys derived from the config dataclass's field metadata (one source of truth)."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(cfg):
        key = f.metadata.get("ss")
        if key:
            out[key] = str(getattr(cfg, f.name))
    return out


def build_metadata(cfg, *, family: str, model_name: str, output_name: str, resolution: tuple[int, int],
                   num_images: int, steps: int, epoch: int, started_at: float,
                   extra: Optional[Mapping[str, Any]] = None, network_args: Optional[dict] = None,
                   prediction_type: Optional[str] = None) -> dict[str, str]:
    """kohya's ``ss_*`` and the model spec's keys; ``prediction_type`` (the backend's) defaults to what the
    family implies (v for ``sd2-v`` only; the toy model is an SD1 that predicts v)."""
    v = prediction_type == "v_prediction" if prediction_type else family == "sd2-v"
    md = config_metadata(cfg)
    md.update({
        "ss_session_id": uuid.uuid4().hex[:16],
        "ss_training_started_at": repr(started_at),
        "ss_training_finished_at": repr(time.time()),
        "ss_output_name": output_name,
        "ss_sd_model_name": model_name,
        "ss_base_model_version": BASE_MODEL_VERSION[family],
        "ss_v2": str(family.startswith("sd2")),
        "ss_v_parameterization": str(v),
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(cfg.rank),
        "ss_network_alpha": str(cfg.alpha),
        "ss_network_args": json.dumps(network_args or {}),
        "ss_learning_rate": str(cfg.unet_lr),
        "ss_unet_lr": str(cfg.unet_lr) if cfg.train_unet else "0",
        "ss_text_encoder_lr": str(cfg.te_lr()) if cfg.train_text_encoder else "0",
        "ss_num_train_images": str(num_images),
        "ss_num_reg_images": "0",
        "ss_steps": str(steps),
        "ss_epoch": str(epoch),
        "ss_resolution": f"({resolution[0]}, {resolution[1]})",
        "ss_training_comment": f"LoRA Trainer {__version__}",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURES[family],
        "modelspec.implementation": "https://github.com/kohya-ss/sd-scripts",
        "modelspec.title": output_name,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started_at)),
        "modelspec.prediction_type": "v" if v else "epsilon",
    })
    if extra:
        for k, v in extra.items():
            md[k] = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return md


def check_finite(tensors: Mapping[str, torch.Tensor]) -> None:
    bad = [k for k, t in tensors.items() if not bool(torch.isfinite(t.float()).all())]
    if bad:
        raise NonFiniteLoss(f"the LoRA weights became NaN/inf ({len(bad)} tensors, e.g. {bad[0]}); nothing was saved",
                            "lower the learning rate, or train in fp32/bf16 instead of fp16")


def save_lora(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    """Write a kohya LoRA file atomically, with ``sshs_model_hash`` computed as the WebUI does; returns it."""
    from safetensors.torch import save

    check_finite(tensors)
    md = dict(metadata)
    md.pop("sshs_model_hash", None)
    first = save(dict(tensors), metadata=md)
    digest = addnet_hash(first)
    md["sshs_model_hash"] = digest
    data = save(dict(tensors), metadata=md)
    assert addnet_hash(data) == digest  # metadata lives in the header, outside the hashed part
    write_bytes(path, data)
    return digest


def write_sidecar(lora_path: str | Path, *, family: str, trigger: str, weight: float = 1.0,
                  description: str = "") -> Path:
    """``<name>.json`` as the WebUI's Lora page reads it: activation text = trigger word."""
    p = Path(lora_path).with_suffix(".json")
    write_json(p, {
        "description": description,
        "sd version": {"sd1": "SD1", "sd2": "SD2", "sd2-v": "SD2", "sdxl": "SDXL"}[family],
        "activation text": trigger,
        "preferred weight": weight,
        "notes": f"Trained with LoRA Trainer {__version__}",
    })
    return p


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    return tensors, md
