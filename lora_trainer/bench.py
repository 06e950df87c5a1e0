"""``python -m lora_trainer.bench``: speed and memory figures, one row per line.

Training rows time our loop (``Trainer._step`` on cached latents, the recipe's networks on UNet and text
encoder) and a plain diffusers + peft loop on the same model and settings — what a user would write from
diffusers' LoRA example — so the two can be compared on the same machine in the same run. Other steps add
their rows through ``ROW_PROVIDERS``. Tests check behaviour, not these timings.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch

from .training.forecast import sync


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _rss_mb()


# --------------------------------------------------------------------------------------------- models

def sd15_components(device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    """Random-initialised full-size SD1.5 UNet, VAE and CLIP-L text encoder (configs from model_loading)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .toy.tokenizer import load_clip_tokenizer
    from .training.model_loading import _VAE, CONFIGS

    torch.manual_seed(seed)
    strip = lambda d: {k: v for k, v in d.items() if not k.startswith("_")}  # noqa: E731
    unet = UNet2DConditionModel(**strip(CONFIGS["sd1"]["unet"]))
    vae = AutoencoderKL(**{k: v for k, v in strip(_VAE).items() if k != "scaling_factor"})
    te_cfg = {k: v for k, v in CONFIGS["sd1"]["text_encoder"].items() if k not in ("architectures", "model_type",
                                                                                     "torch_dtype")}
    te = CLIPTextModel(CLIPTextConfig(**te_cfg))
    parts = {"unet": unet, "vae": vae, "text_encoder": te, "tokenizer": load_clip_tokenizer()}
    for k in ("unet", "vae", "text_encoder"):
        # built in fp32: a cast only when asked (diffusers warns about any dtype given to .to())
        parts[k].to(device, *(() if dtype == torch.float32 else (dtype,))).eval()
    return parts


def tiny_parts(device: torch.device) -> dict:
    from .training.tiny import tiny_components

    parts = tiny_components(seed=0)
    for k in ("unet", "vae", "text_encoder"):
        parts[k].to(device).eval()
    return parts


BENCH_MODELS = ("tiny", "sd15")


def bench_model(model: str, device: torch.device) -> tuple[dict, dict]:
    """The parts and the LoRA shape of one bench model, for the training rows and the feature rows alike: the
    tiny random model at 64 px, rank 8, or random-initialised SD1.5 with the recipe's rank 128 / alpha 64
    (512 px on CUDA, 256 px elsewhere)."""
    if model == "tiny":
        return tiny_parts(device), dict(resolution=64, min_bucket_reso=32, max_bucket_reso=128, bucket_step=8,
                                        rank=8, alpha=4.0)
    if model == "sd15":
        size = 512 if device.type == "cuda" else 256
        return sd15_components(device), dict(resolution=size, min_bucket_reso=256, max_bucket_reso=1024,
                                             bucket_step=64, rank=128, alpha=64.0)
    raise ValueError(f"unknown bench model {model!r} (one of {', '.join(BENCH_MODELS)})")


# --------------------------------------------------------------------------------------------- our loop

def bench_ours(parts: dict, device: torch.device, size: int, batch: int, rank: int, alpha: float, steps: int,
               warmup: int, optimizer: str = "AdamW", mixed_precision: str = "auto",
               gradient_checkpointing: bool = False) -> dict:
    """Our Trainer's step on cached latents: returns s/step, it/s, peak memory, latent-cache seconds per image."""
    import tempfile

    from .config import TrainConfig
    from .training import data as D
    from .training.diffusers_backend import DiffusersBackend
    from .training.forecast import time_steps, warm_trainer
    from .training.tiny import tiny_dataset

    be = DiffusersBackend(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"], device=device,
                          dtype=next(parts["unet"].parameters()).dtype, name="bench")
    with tempfile.TemporaryDirectory() as tmp:
        tiny_dataset(tmp, n=max(4, batch), size=size, repeats=100, name="bench")
        scan = D.scan_dataset(tmp, 1)
        cfg = TrainConfig(resolution=size, min_bucket_reso=min(64, size), max_bucket_reso=size * 2,
                          bucket_step=8 if size < 256 else 64, rank=rank, alpha=alpha, batch_size=batch,
                          optimizer=optimizer, mixed_precision=mixed_precision, save_fractions=[],
                          gradient_checkpointing=gradient_checkpointing, sync_every=steps + warmup)
        # The run's set-up and step timing (forecast.warm_trainer, time_steps); peak memory from the timed steps.
        with warm_trainer(be, scan, cfg) as (tr, idxs):
            for _ in range(warmup):
                tr._step(idxs, False)
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            dt = time_steps(tr, idxs, steps, untimed=0)
            optimizer_used, modules = tr.result.optimizer, len(tr.network)
            cache_per_image = tr.cache_seconds / max(1, len(tr.latents))
        return {"s_per_step": dt, "it_s": 1 / dt, "peak_mb": _peak_mb(device),
                "cache_s_per_image": cache_per_image, "optimizer": optimizer_used, "modules": modules}


# --------------------------------------------------------------------------------------------- baseline

def bench_baseline(parts: dict, device: torch.device, size: int, batch: int, rank: int, alpha: float, steps: int,
                   warmup: int) -> dict:
    """A plain diffusers + peft loop with cached latents: what a user writes from diffusers' LoRA example,
    on the same targets (kohya's), AdamW, fp32 on CPU, a ``loss.item()`` every step as the example logs."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from .compat import inject_lora_peft
    from .training.diffusers_backend import select_te_targets, select_unet_targets

    unet, te, vae, tok = parts["unet"], parts["text_encoder"], parts["vae"], parts["tokenizer"]
    unet_names = {id(m): n for n, m in unet.named_modules()}
    te_names = {id(m): n for n, m in te.named_modules()}
    unet_targets = [unet_names[id(m)] for m in select_unet_targets(unet).values()]
    te_targets = [te_names[id(m)] for m in select_te_targets(te).values()]
    for m in (unet, te, vae):
        m.requires_grad_(False)
    import copy

    unet_l = copy.deepcopy(unet)
    te_l = copy.deepcopy(te)
    inject_lora_peft(unet_l, rank, alpha, unet_targets)
    inject_lora_peft(te_l, rank, alpha, te_targets)
    unet_l.train()
    te_l.train()
    params = [p for m in (unet_l, te_l) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        px = torch.rand(batch, 3, size, size, generator=g).to(device) * 2 - 1
        latents = vae.encode(px).latent_dist.sample() * vae.config.scaling_factor
    ids = tok(["tok, red square"] * batch, padding="max_length", max_length=77, truncation=True,
              return_tensors="pt").input_ids.to(device)

    def step():
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,), device=device)
        noisy = sched.add_noise(latents, noise, t)
        ehs = te_l(ids, return_dict=False)[0]
        pred = unet_l(noisy, t, ehs, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        return loss.item()

    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    out = {"s_per_step": dt, "it_s": 1 / dt, "peak_mb": _peak_mb(device)}
    del unet_l, te_l, opt
    gc.collect()
    return out


# --------------------------------------------------------------------------------------------- rows

def _train_rows(model: str, device: torch.device, quick: bool) -> Iterator[dict]:
    """The baseline, ours and ours in bf16, each yielded when measured."""
    parts, shape = bench_model(model, device)
    size, rank, alpha = shape["resolution"], shape["rank"], shape["alpha"]
    if model == "tiny":
        batch, steps, warmup = 2, 10 if quick else 30, 2
    else:
        batch = 1
        steps, warmup = (50, 5) if device.type == "cuda" else (3, 1)
    tag = f"{model} {size}px bs{batch} r{rank} {device.type}"
    base = bench_baseline(parts, device, size, batch, rank, alpha, steps, warmup)
    yield {"row": f"train-baseline {tag}", "s_per_step": base["s_per_step"], "it_s": base["it_s"],
           "peak_mb": base["peak_mb"]}
    ours = bench_ours(parts, device, size, batch, rank, alpha, steps, warmup, optimizer="AdamW")
    yield {"row": f"train-ours {tag}", "s_per_step": ours["s_per_step"], "it_s": ours["it_s"],
           "peak_mb": ours["peak_mb"], "cache_s_per_image": ours["cache_s_per_image"], "modules": ours["modules"],
           "ratio_to_baseline": ours["s_per_step"] / base["s_per_step"]}
    bf = bench_ours(parts, device, size, batch, rank, alpha, steps, warmup, optimizer="AdamW",
                    mixed_precision="bf16")
    yield {"row": f"train-ours-bf16 {tag}", "s_per_step": bf["s_per_step"], "it_s": bf["it_s"],
           "peak_mb": bf["peak_mb"], "ratio_to_baseline": bf["s_per_step"] / base["s_per_step"]}


def forecast_rows(model: str, device: torch.device, quick: bool) -> Iterator[dict]:
    """The forecast against the run it forecasts: ``forecast_run`` on a config, then that run through
    ``train()`` (data, caching, loop, saves), timed. ``error`` = forecast ÷ actual − 1; also the first timed
    step against the steady one the forecast now uses (what the old first-steps forecast was off by)."""
    import tempfile

    from .config import TrainConfig
    from .training import data as D
    from .training.diffusers_backend import DiffusersBackend
    from .training.forecast import forecast_run
    from .training.loop import train
    from .training.tiny import tiny_dataset

    parts, shape = bench_model(model, device)
    be = DiffusersBackend(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"], device=device,
                          dtype=next(parts["unet"].parameters()).dtype, name="bench")
    size = shape["resolution"]
    steps = (20 if quick else 60) if model == "tiny" or device.type == "cuda" else 4
    with tempfile.TemporaryDirectory() as tmp:
        tiny_dataset(Path(tmp) / "data", n=4, size=size, repeats=100, name="bench")
        cfg = TrainConfig(**shape, batch_size=2, optimizer="AdamW", max_steps=steps, save_fractions=[],
                          sample_every_n_steps=0)
        scan = D.scan_dataset(Path(tmp) / "data", 1)
        fc = forecast_run(be, scan, cfg)
        sync(device)
        t0 = time.perf_counter()
        res = train(be, Path(tmp) / "data", cfg, Path(tmp) / "out")
        sync(device)
        actual = time.perf_counter() - t0
    forecast_s = fc["minutes"] * 60
    yield {"row": f"forecast {model} {size}px bs2 r{shape['rank']} {device.type}", "steps": res.steps,
           "forecast_s": forecast_s, "actual_s": actual, "error": forecast_s / actual - 1,
           "s_per_step": fc["seconds_per_step"], "first_step_s": fc["first_step_seconds"],
           "timed_steps": fc["timed_steps"], "warmup_left_out": fc["warmup_left_out"]}


ROW_PROVIDERS: dict[str, Callable[[argparse.Namespace], Iterable[dict]]] = {
    "train-tiny": lambda a: _train_rows("tiny", a.device, a.quick),
    "train-sd15": lambda a: _train_rows("sd15", a.device, a.quick),
    "forecast": lambda a: forecast_rows(a.model, a.device, a.quick),
}


def _optional_providers() -> None:
    """Rows other steps add (preparation, optimizers, the LR sweep) when their modules exist."""
    import importlib

    # (module, function, row names, whether the function takes the parsed arguments)
    for mod, fn, names, takes_args in (("lora_trainer.bench_prepare", "prepare_rows", ("prepare",), False),
                                       ("lora_trainer.training.bench_features", "feature_rows", ("optimizers",), True),
                                       ("lora_trainer.training.lr_sweep", "sweep_rows", ("lr-sweep",), True)):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        for name in names:
            ROW_PROVIDERS.setdefault(
                name, lambda a, m=m, fn=fn, t=takes_args: getattr(m, fn)(a) if t else getattr(m, fn)())


def _fmt(row: dict) -> str:
    parts = [row["row"]]
    for k, v in row.items():
        if k == "row":
            continue
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return "  ".join(parts)


def main(argv: Optional[list[str]] = None) -> int:
    _optional_providers()
    p = argparse.ArgumentParser(prog="python -m lora_trainer.bench", description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", choices=sorted(ROW_PROVIDERS), help="run only these rows (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="fewer timed steps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--model", choices=BENCH_MODELS, default="tiny",
                   help="optimizers, forecast: the model their rows train (sd15: random-initialised SD1.5, rank 128)")
    p.add_argument("--sweep-json", metavar="FILE", help="lr-sweep: also write the sweep's full figures to FILE")
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = args.only or [n for n in ROW_PROVIDERS if n != "lr-sweep"]
    for name in names:
        for row in ROW_PROVIDERS[name](args):
            print(json.dumps(row) if args.json else _fmt(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
