"""Shared tiny diffusers model for the training tests, and base-model snapshots for any backend."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def tiny_parts():
    from lora_trainer.training.tiny import tiny_components

    return tiny_components(seed=0)


def tiny_backend(**kw):
    """A DiffusersBackend over the shared tiny parts (training never changes base weights)."""
    from lora_trainer.training.diffusers_backend import DiffusersBackend

    c = tiny_parts()
    return DiffusersBackend(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], name="tiny-random", **kw)


def base_snapshot(backend):
    """(name, param object, data_ptr, clone) for every base parameter, plus the module tree."""
    params = []
    tree = []
    for role, m in backend.modules().items():
        for n, p in m.named_parameters():
            params.append((f"{role}.{n}", p, p.data_ptr(), p.detach().clone(), p.requires_grad))
        tree.extend((f"{role}.{n}", type(mod).__name__, "forward" in mod.__dict__) for n, mod in m.named_modules())
    return params, tree


def assert_base_unchanged(backend, snapshot):
    params, tree = snapshot
    now = {f"{role}.{n}": p for role, m in backend.modules().items() for n, p in m.named_parameters()}
    assert len(now) == len(params)
    for name, p, ptr, value, rg in params:
        assert now[name] is p, name
        assert p.data_ptr() == ptr, name
        assert torch.equal(p.detach(), value), name
        assert p.requires_grad == rg, name
    _, tree_now = base_snapshot(backend)
    assert tree_now == tree
