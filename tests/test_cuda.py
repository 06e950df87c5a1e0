"""The training step on a CUDA GPU: skipped where there is none (CI has none); ``.ci/device-check`` runs this
file on a lent GPU machine.

- our code in the step (bf16 and fp16, AdamW and AdamW8bit) makes no host synchronisation (DESIGN.md, the
  hot path), seen with ``torch.cuda.set_sync_debug_mode("warn")`` and attributed by the warning's file: a
  sync inside torch, diffusers or transformers is reported, not failed on;
- a whole run in the recipe's precision and optimizer (fp16 autocast with the grad scaler, AdamW8bit)
  writes a finite LoRA with the 8-bit optimizer really used, not the CPU fallback.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from conftest import needs_diffusers

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (.ci/device-check runs it on a lent machine)"),
              needs_diffusers]

PACKAGE = str(Path(__file__).resolve().parents[1] / "lora_trainer")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from lora_trainer.training.tiny import tiny_dataset

    root = tmp_path_factory.mktemp("cuda-data")
    tiny_dataset(root, n=4, size=64, repeats=2)
    return root


def _backend():
    from lora_trainer.training.diffusers_backend import DiffusersBackend
    from lora_trainer.training.tiny import tiny_components

    c = tiny_components(seed=0)
    return DiffusersBackend(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], device=torch.device("cuda"),
                            name="tiny-cuda")


def _cfg(**kw):
    from lora_trainer.config import toy_config

    return toy_config(**{"epochs": 1, "batch_size": 2, "save_fractions": [], "sync_every": 1000, **kw})


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("optimizer", ["AdamW", "AdamW8bit"])
def test_our_part_of_a_step_makes_no_host_sync(data_dir, optimizer, precision):
    """fp16's grad scaler reads ``found_inf`` on the host unless the optimizer takes it on the device (torch's
    fused AdamW does, bitsandbytes' does not): that one is torch's, reported in the output."""
    from lora_trainer.training import data as D
    from lora_trainer.training.forecast import warm_trainer

    be = _backend()
    cfg = _cfg(optimizer=optimizer, mixed_precision=precision)
    with warm_trainer(be, D.scan_dataset(data_dir, 1), cfg) as (tr, batch):
        assert tr.result.optimizer == optimizer
        tr._step(batch, False)  # first step: lazy state, kernels chosen
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(3):
                    tr._step(batch, False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    syncs = [w for w in seen if "synchroniz" in str(w.message)]
    ours = [f"{w.filename}:{w.lineno}" for w in syncs if w.filename.startswith(PACKAGE)]
    others = sorted({f"{Path(w.filename).name}:{w.lineno}" for w in syncs if not w.filename.startswith(PACKAGE)})
    print(f"{optimizer} {precision}: host syncs outside our code in 3 steps: {others or 'none'}")
    assert not ours, f"host synchronisations in our step: {ours}"


def test_a_recipe_run_on_cuda_writes_a_finite_lora_with_the_8bit_optimizer(data_dir, tmp_path):
    from safetensors.torch import load_file

    from lora_trainer.training.loop import train

    be = _backend()
    res = train(be, data_dir, _cfg(optimizer="AdamW8bit", mixed_precision="fp16", max_steps=6, sync_every=2),
                tmp_path)
    assert res.optimizer == "AdamW8bit", res.warnings
    tensors = load_file(str(res.output))
    assert tensors and all(torch.isfinite(t.float()).all() for t in tensors.values())
    assert any(k.startswith("lora_te_") for k in tensors) and any(k.startswith("lora_unet_") for k in tensors)
