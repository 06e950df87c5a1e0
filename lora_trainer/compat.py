"""Every version difference the code meets, in one place (issue 11).

The WebUI 1.10 venv runs torch 2.1.2, transformers 4.30.2, peft <= 0.13.2, safetensors 0.4.2, pydantic 1,
gradio 3.41; standalone runs the newest stack. Nothing else in the package branches on versions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Optional


def version_of(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_tuple(v: Optional[str]) -> tuple[int, ...]:
    out = []
    for part in (v or "0").split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


# ---- torch ------------------------------------------------------------------------------------------

def grad_scaler(device_type: str = "cuda") -> Any:
    """``torch.amp.GradScaler`` (torch >= 2.3) or ``torch.cuda.amp.GradScaler`` (torch 2.1/2.2)."""
    import torch

    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        return amp.GradScaler(device_type)
    return torch.cuda.amp.GradScaler()


def autocast(device_type: str, dtype: Any):
    """``torch.autocast`` for a dtype, or a no-op when ``dtype`` is None (torch 2.1 rejects
    ``autocast("cpu", dtype=float32, enabled=False)`` while newer versions accept it)."""
    import contextlib

    import torch

    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


# ---- transformers -----------------------------------------------------------------------------------

def clip_text_module_paths_have_prefix(text_model: Any) -> bool:
    """transformers < 5.6 nests CLIPTextModel under ``text_model.``; 5.6+ flattens it."""
    return any(n.startswith("text_model.") for n, _ in text_model.named_modules())


# ---- peft -------------------------------------------------------------------------------------------

def inject_lora_peft(model: Any, rank: int, alpha: float, target_modules: list[str]) -> Any:
    """Add a peft LoRA adapter in place; ``inject_adapter_in_model`` exists in peft 0.9 – 0.21."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules, init_lora_weights=True)
    return inject_adapter_in_model(cfg, model)


# ---- pydantic ---------------------------------------------------------------------------------------

def pydantic_major() -> int:
    return version_tuple(version_of("pydantic"))[0] if version_of("pydantic") else 0


def model_dump(obj: Any) -> dict:
    """pydantic 2's ``model_dump`` or pydantic 1's ``dict``."""
    return obj.model_dump() if hasattr(obj, "model_dump") else obj.dict()


def strict_model_base() -> type:
    """A ``BaseModel`` subclass that refuses unknown fields (``additionalProperties: false``).

    pydantic 1 reads ``class Config``; pydantic 2 reads ``model_config`` and, by default, warns about
    fields named ``model_*`` (our configs have ``model_path`` and ``model_dir``), hence
    ``protected_namespaces=()``.
    """
    from pydantic import BaseModel

    if pydantic_major() >= 2:
        from pydantic import ConfigDict

        class StrictModel(BaseModel):
            model_config = ConfigDict(extra="forbid", protected_namespaces=())
    else:
        class StrictModel(BaseModel):  # type: ignore[no-redef]
            class Config:
                extra = "forbid"

            @classmethod
            def validate(cls, value: Any) -> Any:
                # pydantic 1 builds a model from anything dict() takes: [] became {} (a job with defaults)
                if not isinstance(value, (dict, cls)):
                    raise TypeError("value is not a JSON object")
                return super().validate(value)
    return StrictModel


def strict_float(**bounds: Any) -> type:
    """A float field that takes JSON numbers only (ints too), never strings or booleans: pydantic 1's
    ``confloat`` turns ``"1e-4"`` and ``true`` into floats, and its ``strict=True`` refuses ints. ``bounds``:
    ``ge``/``le``/... as ``confloat`` takes them."""
    from pydantic import confloat

    if pydantic_major() >= 2:
        return confloat(strict=True, **bounds)  # pydantic 2's strict float still takes an int

    base = confloat(**bounds)

    def number_only(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError("value is not a number")
        return v

    class StrictNumber(base):  # type: ignore[misc, valid-type]
        @classmethod
        def __get_validators__(cls):
            yield number_only
            yield from super().__get_validators__()

    return StrictNumber


def validation_errors(exc: Any) -> list:
    """``[(location, message)]`` of a pydantic 1 or 2 validation error (FastAPI's RequestValidationError)."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        out.append((loc, str(err.get("msg", "invalid value"))))
    return out


# ---- gradio -----------------------------------------------------------------------------------------

def gradio_major() -> int:
    return version_tuple(version_of("gradio"))[0] if version_of("gradio") else 0


def js_kw(code: str) -> dict:
    """A client-side hook on an event or load: ``_js=`` in gradio 3, ``js=`` in 4."""
    return {"_js": code} if gradio_major() < 4 else {"js": code}


def queue_kw(concurrency: int) -> dict:
    """``Blocks.queue`` arguments: ``concurrency_count`` in gradio 3, ``default_concurrency_limit`` in 4."""
    return {"concurrency_count": concurrency} if gradio_major() < 4 else {"default_concurrency_limit": concurrency}


# ---- diffusers --------------------------------------------------------------------------------------

def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
