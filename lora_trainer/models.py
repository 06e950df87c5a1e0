"""Which model a command runs on: ``--base-model`` or the embedded default, plus its preset.

``--base-model`` omitted = the embedded toy model (INTERFACES.md §4). Until the toy model's weights exist
in the package, a tiny random model built in code stands in (it proves the plumbing, it learns nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch


def cache_dir() -> Path:
    from .toy.tokenizer import default_cache_dir

    return default_cache_dir()


def preset_for(base_model: Optional[str]) -> Optional[dict]:
    """The toy preset for the embedded model; none (the recipe defaults) for a user's model."""
    from .config import TOY_PRESET

    return None if base_model else dict(TOY_PRESET)


def sampling_for(base_model: Optional[str]) -> dict:
    """Test-image defaults (steps, cfg_scale, sampler): the toy model's for the embedded model, the usual
    SD ones for a user's model."""
    from .config import DEFAULT_SAMPLING, TOY_SAMPLING

    return dict(DEFAULT_SAMPLING if base_model else TOY_SAMPLING)


def load_backend(base_model: Optional[str], device: torch.device):
    """(backend, preset dict or None) for a command."""
    from .config import TOY_PRESET

    if base_model:
        from .model_files import check_base_model
        from .training.diffusers_backend import DiffusersBackend, require_diffusers

        if check_base_model(base_model) == "remote":  # a bad local file is named at once, before any loading
            from .model_store import resolve_base_model, tqdm_progress  # a hub id or URL: into the cache

            base_model = resolve_base_model(base_model, tqdm_progress(f"base model {base_model}"))
            check_base_model(base_model)  # what arrived is checked like a local file
        require_diffusers()
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        return DiffusersBackend.load(Path(base_model), device=device, dtype=dtype), None
    try:
        from .toy import model as toy_model  # the embedded toy model, once built
    except ImportError:
        toy_model = None
    if toy_model is not None and toy_model.available():
        return toy_model.backend(device), dict(TOY_PRESET)
    from .training.diffusers_backend import require_diffusers
    from .training.tiny import tiny_backend

    require_diffusers()
    return tiny_backend(device=device), dict(TOY_PRESET)


def default_dataset() -> Path:
    """The demo set used when ``--data`` is omitted, made once in the cache folder."""
    try:
        from .toy import model as toy_model
    except ImportError:
        toy_model = None
    if toy_model is not None and hasattr(toy_model, "demo_dataset"):
        return toy_model.demo_dataset(cache_dir() / "demo_dataset")
    from .training.tiny import tiny_dataset

    root = cache_dir() / "tiny_dataset"
    if not any(root.glob("*_*/*.png")):
        tiny_dataset(root, n=8, repeats=10, name="tiny")
    return root


def refuse_ckpt(path: Path) -> None:
    from .model_files import refuse_pickle

    refuse_pickle(path)
