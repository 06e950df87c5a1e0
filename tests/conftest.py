"""Shared test set-up: offline, deterministic, small."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DO_NOT_TRACK", "1")

import importlib.util

import pytest

HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
needs_diffusers = pytest.mark.skipif(
    not HAS_DIFFUSERS, reason="needs diffusers: the WebUI 1.10 host profile has none (INTERFACES.md §6)")


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one torch thread is several times faster than two
    spinning against other processes. Restored afterwards. Modules use it through an autouse fixture."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def world_photos(folder, n=4, stem="照片"):
    """``n`` toy-world pictures as PNGs named ``<stem>0.png`` … (CJK by default, as a phone folder may have),
    sorted paths."""
    import numpy as np

    from lora_trainer.toy.world import render, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        render(sample_scene(rng)).save(folder / f"{stem}{i}.png")
    return sorted(folder.iterdir())


def flat_routes(routes):
    """An app's routes, with an included router's own routes in its place (newer FastAPI wraps one)."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield r
