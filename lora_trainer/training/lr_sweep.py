"""The toy LR sweep (``python -m lora_trainer.bench --only lr-sweep``): which UNet lr teaches the toy model
the demo's new shape best, measured, so the toy preset's lr is a figure and not a guess — and the yardstick
the LR estimate is checked against.

The grid is fixed here, before any result was seen: 8 learning rates ×2 apart, 2.5e-4 … 3.2e-2, around the
provisional 1e-3. Each lr trains the toy preset (INTERFACES §4: 20 images × 10 repeats × 2 epochs at batch
4 = 100 steps, rank 8, alpha 4, text encoder at lr/10) on the demo's dataset from the same seed, and is
judged by the demo's own evaluation: the fraction of the 64 fixed test generations in which the toy
detector finds the new shape with the LoRA applied, averaged over three training seeds (``TRAIN_SEEDS``):
one training's rate moves by ±10 points with the seed — and with the CPU's arithmetic, so a figure from one
seed on one machine is not another machine's. The best mean wins; ties go to the lower lr. When the
best lr is on an edge of what was tried, the sweep extends one ×2 step past that edge (up to four times),
so the winner is always bracketed.

Without the toy model (its weights or diffusers missing) the sweep runs on the tiny random model with a
stand-in judge (``denoise_rate``: over 64 seeds, how often the LoRA lowers the denoising error on the
training latents), which exercises the same code and proves nothing about the preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

GRID: tuple = tuple(2.5e-4 * 2 ** k for k in range(8))  # 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2
TRAIN_SEEDS: tuple = (42, 43, 44)  # 42 is TrainConfig's default seed, the one the demo trains with
MAX_EXTENSIONS = 4


def choose(rates: dict) -> float:
    """The lr with the highest rate; among equal rates the lowest lr."""
    return min(rates, key=lambda lr: (-rates[lr], lr))


def run_sweep(evaluate: Callable[[float], float], grid: Sequence[float] = GRID,
              max_extensions: int = MAX_EXTENSIONS, say: Callable[[str], None] = lambda m: None) -> dict:
    """Evaluate every lr of ``grid``, then extend past an edge while the best lies on it.

    A best rate of 0 (nothing learned anywhere) is not extended: there is no direction to go.
    """
    rates: dict = {}
    for lr in grid:
        rates[lr] = float(evaluate(lr))
        say(f"lr {lr:.3g}: {rates[lr]:.3f}")
    extended = []
    while len(extended) < max_extensions:
        best = choose(rates)
        if rates[best] <= 0:
            break
        if best == min(rates):
            new = best / 2
        elif best == max(rates):
            new = best * 2
        else:
            break
        rates[new] = float(evaluate(new))
        extended.append(new)
        say(f"lr {new:.3g} (extension): {rates[new]:.3f}")
    best = choose(rates)
    return {"grid": list(grid), "extended": extended, "rates": sorted(rates.items()), "best_lr": best,
            "best_rate": rates[best]}


# --------------------------------------------------------------------------------------------- judges

def toy_setup(work: Path, device=None):
    """(backend, dataset root, judge) for the real sweep: the toy model, the demo's prepared dataset, and
    the demo's new-shape (ring) rate over its 64 test seeds."""
    from ..toy import demo
    from ..toy import model as M

    be = M.backend(device)
    run = demo.prepare_dataset(demo.DemoRun(Path(work), be, say=lambda m: None))
    return be, run.dataset_root, lambda lora: demo.new_shape_rate(be, lora)


def denoise_rate(backend, data_dir, lora, cfg, seeds: Sequence[int] = tuple(range(64))) -> float:
    """Stand-in judge: fraction of ``seeds`` whose (noise, t) draw on the training latents the LoRA denoises
    better than the base model."""
    import torch

    from . import data as D
    from .loop import add_noise
    from .network import LoRANetwork
    from .saving import read_lora

    scan = D.scan_dataset(data_dir, 1)
    px = torch.stack([D.to_tensor(D.resize_crop(D.load_image(it.path), (cfg.resolution, cfg.resolution)))
                      for it in scan.items]).to(backend.device)
    caps = [it.caption for it in scan.items]
    tensors, _ = read_lora(lora)
    targets = {**backend.lora_targets("unet", conv=True), **backend.lora_targets("te")}
    names = {k.split(".")[0] for k in tensors}
    net = LoRANetwork({n: targets[n] for n in names}, rank=cfg.rank, alpha=cfg.alpha, conv_rank=cfg.rank,
                      conv_alpha=cfg.conv_alpha)
    net.load_kohya({k: v.float() for k, v in tensors.items()})
    net.to(backend.device)
    ac = backend.alphas_cumprod().to(backend.device)
    wins = 0
    with torch.no_grad():
        lat = backend.encode_images(px)
        cond = backend.encode_text(caps)
        with net.applied():
            cond_l = backend.encode_text(caps)
        for s in seeds:
            g = torch.Generator().manual_seed(int(s))
            noise = torch.randn(lat.shape, generator=g).to(lat.device)
            t = torch.randint(50, 950, (lat.shape[0],), generator=g).to(lat.device)
            x = add_noise(lat, noise, ac[t])
            base = torch.nn.functional.mse_loss(backend.denoise(x, t, cond), noise)
            with net.applied():
                with_l = torch.nn.functional.mse_loss(backend.denoise(x, t, cond_l), noise)
            wins += bool(with_l < base)
    return wins / len(seeds)


# --------------------------------------------------------------------------------------------- the sweep

def sweep(work: Path, device=None, grid: Sequence[float] = GRID, max_steps: int = 0,
          say: Callable[[str], None] = lambda m: None, use_toy: Optional[bool] = None,
          estimate: bool = True, max_extensions: int = MAX_EXTENSIONS, judge_seeds: int = 64,
          train_seeds: Sequence[int] = TRAIN_SEEDS) -> dict:
    """The whole sweep in ``work``: dataset, one training per lr and training seed, the judge (its mean over
    the seeds is the lr's rate); plus the LR estimate on the same dataset and config for comparison. Returns
    the figures. ``judge_seeds`` sizes the stand-in judge only (the toy judge is the demo's 64 test seeds);
    ``max_extensions`` bounds the steps past an edge."""
    import torch

    from ..config import toy_config
    from ..toy import model as M
    from .loop import train

    device = device or torch.device("cpu")
    work = Path(work)
    use_toy = M.available() if use_toy is None else use_toy
    if use_toy:
        be, data_root, judge_file = toy_setup(work / "data", device)
        model = "toy"
    else:
        from .tiny import tiny_backend, tiny_dataset

        be = tiny_backend(device=device)
        data_root = work / "data"
        tiny_dataset(data_root, n=4, repeats=10, name="zkw")
        model = "tiny (stand-in judge)"
    base_cfg = toy_config(name="zkw", trigger_word="zkw", save_fractions=[], max_steps=max_steps)
    if not use_toy:
        judge_file = lambda lora: denoise_rate(be, data_root, lora, base_cfg, tuple(range(judge_seeds)))  # noqa: E731
    details: dict = {}

    def evaluate(lr: float) -> float:
        t0 = time.time()
        per_seed, losses = {}, []
        for seed in train_seeds:
            cfg = dataclasses.replace(base_cfg, unet_lr=lr, seed=int(seed))
            res = train(be, data_root, cfg, work / f"lr-{lr:.3g}-seed{seed}")
            per_seed[int(seed)] = judge_file(res.output)
            losses.append(res.final_loss)
            say(f"  lr {lr:.3g} seed {seed}: {per_seed[int(seed)]:.3f}")
        details[lr] = {"loss": sum(losses) / len(losses), "steps": res.steps, "seconds": time.time() - t0,
                       "optimizer": res.optimizer, "per_seed": per_seed}
        return sum(per_seed.values()) / len(per_seed)

    out = run_sweep(evaluate, grid, max_extensions, say=say)
    out.update(model=model, details=details, config={k: getattr(base_cfg, k) for k in (
        "rank", "alpha", "batch_size", "repeats", "epochs", "resolution", "optimizer", "te_lr_ratio")},
               train_seeds=[int(s) for s in train_seeds])
    if estimate:
        from .estimate import estimate_lr

        est = estimate_lr(be, data_root, base_cfg, work / "estimate")
        out["estimate"] = {**est.as_dict(), "ratio_to_best": est.unet_lr / out["best_lr"]}
        say(f"estimate: proposed {est.unet_lr:.3g} ({est.limited_by}; d·lr {est.d_lr:.3g} after {est.steps} steps, "
            f"{est.reason}); best swept lr {out['best_lr']:.3g}; ratio {est.unet_lr / out['best_lr']:.2f}")
    return out


def sweep_rows(args: argparse.Namespace) -> list[dict]:
    """Bench rows: one per lr tried, the best, and the estimate beside it."""
    import sys

    with tempfile.TemporaryDirectory(prefix="lora-trainer-sweep-") as tmp:
        fig = sweep(Path(tmp), args.device, say=lambda m: print(m, file=sys.stderr, flush=True))
    if getattr(args, "sweep_json", None):
        from ..workspace import write_json

        write_json(Path(args.sweep_json), {**fig, "details": {str(k): v for k, v in fig["details"].items()}})
    rows = []
    ext = set(fig["extended"])
    for lr, rate in fig["rates"]:
        d = fig["details"][lr]
        rows.append({"row": f"lr-sweep {fig['model']} lr={lr:.3g}", "with_lora": rate,
                     "per_seed": [round(r, 3) for r in d["per_seed"].values()], "loss": d["loss"],
                     "train_s": d["seconds"], "extension": lr in ext, "optimizer": d["optimizer"]})
    rows.append({"row": f"lr-sweep {fig['model']} best", "best_lr": fig["best_lr"], "with_lora": fig["best_rate"]})
    if "estimate" in fig:
        e = fig["estimate"]
        rows.append({"row": f"lr-sweep {fig['model']} estimate", "unet_lr": e["unet_lr"], "d_lr": e["d_lr"],
                     "limited_by": e["limited_by"], "steps": e["steps"],
                     "reason": e["reason"], "ratio_to_best": e["ratio_to_best"],
                     "within_x2": 0.5 <= e["ratio_to_best"] <= 2.0})
    return rows
