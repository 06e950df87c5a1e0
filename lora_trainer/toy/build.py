"""Build the embedded toy model: ``python -m lora_trainer.toy.build [--out FILE] [--minutes N]``.

Trains, on CPU and seeded, first the VAE (reconstruction of world images) and then the UNet together
with the text encoder (noise prediction on the VAE's latents, captions dropped 10% of the time so
classifier-free guidance works). Data is the BASE world only: circle/square/triangle/frame on white,
black or gray; the ring the demo teaches is never shown. Each phase runs a fixed number of steps, scaled
down when the time budget (``--minutes``, measured on the first steps) would not fit them, so the build
ends in time on a busy 2-core machine; the steps actually run are recorded in the file's metadata
together with the config, the seed and the measured figures (VAE reconstruction and base quality).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from . import model as M
from .world import BASE_SHAPES, NEUTRAL_BACKGROUNDS, NEW_SHAPE, caption, render, sample_scene


@dataclass
class BuildConfig:
    seed: int = 0
    images: int = 8000
    vae_steps: int = 2500
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_crop: int = 32            # most VAE steps see random crops (4× cheaper); the last ones full images
    vae_full_fraction: float = 0.08
    vae_kl: float = 1e-5
    unet_steps: int = 12000
    unet_batch: int = 16          # 0.52 s/step on 2 idle cores (32: 0.88 s)
    unet_lr: float = 1e-3
    te_lr: float = 1e-3
    warmup: int = 200
    min_snr_gamma: float = 5.0   # x0-error weight min(SNR, γ) + 1 (see x0_weights)
    prediction: str = "v_prediction"  # what the UNet predicts (see x0_weights); "epsilon" as SD1 does
    caption_dropout: float = 0.1
    shape_first: float = 0.25     # captions in the trigger's form: "circle, red, …" (see caption_forms)
    unknown_word: float = 0.25    # … and with an unknown word in the shape's place (see unknown_word_ids)
    unknown_pool: int = 2000      # how many never-trained tokens serve as unknown words
    ema: float = 0.999
    minutes: float = 40.0         # the whole build, evaluation included
    vae_share: float = 0.35       # of the training time
    eval_seeds: int = 16
    eval_every: int = 750         # a quick base-quality check (4 seeds) every N UNet steps, printed
    threads: int = 2              # idle 2 cores: 0.52 s/UNet step (1 thread: 0.77); on a busy machine use 1


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def caption_forms(scene) -> tuple[str, str]:
    """The two caption texts of a base image: the world's own (``red circle, white background, …``) and the
    form a trigger-word caption has, the shape's name in the trigger's place (``circle, red, white
    background, …``); the third form, an unknown word in that place, is made from the second's token ids
    (``unknown_word_ids``). A model that saw only the first drew a blue square for ``zkw, red, white background``:
    a colour standing alone as a tag was new to it, so a LoRA had to teach the caption form and the new shape
    at once (100 steps drew no new shape)."""
    return caption(scene), caption(scene, trigger=scene.shape)


def make_images(cfg: BuildConfig, rng: np.random.Generator) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    scenes = [sample_scene(rng, shapes=BASE_SHAPES, backgrounds=NEUTRAL_BACKGROUNDS) for _ in range(cfg.images)]
    arr = np.stack([np.asarray(render(s)) for s in scenes])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), [caption_forms(s) for s in scenes]


def make_vae_images(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Base-world scenes turned by a random angle, for the VAE only.

    Still the base shapes (never a ring), but with edges at every orientation, so the VAE reconstructs
    shapes it has not seen (the ring a LoRA will teach) instead of only four outlines.
    """
    from PIL import Image

    from .world import BACKGROUNDS

    out = []
    for _ in range(n):
        s = sample_scene(rng, shapes=BASE_SHAPES, backgrounds=NEUTRAL_BACKGROUNDS)
        img = render(s).rotate(float(rng.uniform(0, 360)), resample=Image.BICUBIC,
                               fillcolor=BACKGROUNDS[s.background])
        out.append(np.asarray(img))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def to_pixels(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 127.5 - 1.0


def x0_weights(alphas_cumprod_t: torch.Tensor, gamma: float, prediction: str = "v_prediction") -> torch.Tensor:
    """Weights of the eps or v loss that make it an x0 loss weighted min(SNR, γ) + 1.

    Plain Min-SNR leaves the x0 error at high noise weighted by SNR itself (0.005 at t = 999): a model
    trained so learns the picture's layout and colours, which are decided there, from almost nothing (the
    first build confused red with blue after 4,000 steps). The "+ 1" keeps high noise at weight 1 while low
    noise stays capped at γ + 1. The builds predict v (as SD 2's 768-v model does), not eps: an eps model
    must give x0 as (x_t - σ·eps)/α, so at t = 999 (α = 0.07) its errors reach the picture 15-fold, and a
    second build with eps and these weights still drew the prompted colour in 12% of generations after
    1,500 steps.
    """
    snr = alphas_cumprod_t / (1.0 - alphas_cumprod_t)
    x0 = torch.clamp(snr, max=gamma) + 1.0
    return x0 / (snr + 1.0) if prediction == "v_prediction" else x0 / snr


def cosine_lr(step: int, total: int, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


class Budget:
    """Fits a phase's step count to its deadline: re-estimated every ``every`` steps from the recent pace.

    The machine is shared, so the pace changes; the count never exceeds the configured steps.
    """

    def __init__(self, steps: int, seconds: float, every: int = 25):
        self.max_steps, self.total, self.every = steps, steps, every
        self.t0 = self.t_mark = time.time()
        self.deadline = self.t0 + seconds
        self.step_mark = 0

    def after(self, step: int) -> int:
        if step % self.every == 0 and step < self.total:
            now = time.time()
            per = (now - self.t_mark) / max(1, step - self.step_mark)
            self.t_mark, self.step_mark = now, step
            fit = step + int(max(0.0, self.deadline - now) / per)
            self.total = max(step + 1, min(self.max_steps, fit))
        return self.total


# --------------------------------------------------------------------------------------------- VAE

def train_vae(vae, images: torch.Tensor, cfg: BuildConfig, seconds: float, gen: torch.Generator) -> int:
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    budget = Budget(cfg.vae_steps, seconds)
    vae.train()
    step, total, run = 0, cfg.vae_steps, 0.0
    while step < total:
        full = step >= total * (1 - cfg.vae_full_fraction)
        idx = torch.randint(0, images.shape[0], (cfg.vae_batch,), generator=gen)
        x = to_pixels(images[idx])
        if not full:
            c = cfg.vae_crop
            ox, oy = torch.randint(0, x.shape[-1] - c + 1, (2,), generator=gen).tolist()
            x = x[..., oy:oy + c, ox:ox + c]
        for g in opt.param_groups:
            g["lr"] = cfg.vae_lr * cosine_lr(step, total, 50)
        dist = vae.encode(x).latent_dist
        rec = vae.decode(dist.sample(generator=gen)).sample
        kl = 0.5 * (dist.mean ** 2 + dist.var - 1.0 - dist.logvar).mean()
        loss = F.mse_loss(rec, x) + 0.1 * F.l1_loss(rec, x) + cfg.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        total = budget.after(step)
        run = 0.98 * run + 0.02 * float(loss.detach()) if step > 1 else float(loss.detach())
        if step % 50 == 0 or step == total:
            say(f"  vae {step}/{total} loss {run:.5f}{' (full images)' if full else ''}")
    vae.eval()
    return step


@torch.no_grad()
def vae_check(vae, n: int = 48, seed: int = 99) -> dict:
    """Detector accuracy on VAE reconstructions: base shapes, and the new shape (ring) the VAE never saw."""
    from .detector import matches

    rng = np.random.default_rng(seed)
    out = {}
    for label, shapes in (("base", BASE_SHAPES), ("new", (NEW_SHAPE,))):
        scenes = [sample_scene(rng, shapes=shapes, backgrounds=NEUTRAL_BACKGROUNDS) for _ in range(n)]
        x = to_pixels(torch.from_numpy(np.stack([np.asarray(render(s)) for s in scenes])).permute(0, 3, 1, 2))
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        arr = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        from PIL import Image

        ok = sum(matches(Image.fromarray(a), shape=s.shape, colour=s.colour) for a, s in zip(arr, scenes))
        out[label] = ok / n
    return out


@torch.no_grad()
def encode_all(vae, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, images.shape[0], batch):
        d = vae.encode(to_pixels(images[i:i + batch])).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


# --------------------------------------------------------------------------------------------- UNet + TE

def train_diffusion(parts: dict, mean: torch.Tensor, std: torch.Tensor, ids: torch.Tensor, empty_ids: torch.Tensor,
                    cfg: BuildConfig, seconds: float, gen: torch.Generator, frozen=()) -> int:
    """``ids``: per image, one row of token ids per caption form (N × 3 × 77: the world's caption, the
    trigger's form, the unknown-word form); ``frozen``: token ids whose embedding rows keep their seeded
    draw (the unknown words)."""
    from ..training.backend import scaled_linear_alphas_cumprod

    unet, te = parts["unet"], parts["text_encoder"]
    scale = parts["vae"].config.scaling_factor
    alphas = scaled_linear_alphas_cumprod()
    # Train only the token rows the captions use: a compact table (ids remapped) instead of 49,408 rows,
    # whose optimizer step alone cost more than the text encoder's forward and backward.
    full_table = te.get_input_embeddings()
    used = torch.unique(torch.cat([ids.flatten(), empty_ids]))
    lookup = torch.full((full_table.num_embeddings,), -1, dtype=torch.long)
    lookup[used] = torch.arange(used.numel())
    compact = torch.nn.Embedding(used.numel(), full_table.embedding_dim)
    with torch.no_grad():
        compact.weight.copy_(full_table.weight[used])
    te.set_input_embeddings(compact)
    ids, empty_ids = lookup[ids], lookup[empty_ids]
    if len(frozen):
        keep = lookup[torch.as_tensor(list(frozen), dtype=torch.long)]
        compact.weight.register_hook(lambda g: g.index_fill(0, keep, 0.0))  # zero grad: Adam leaves them as drawn
    groups = [{"params": list(unet.parameters()), "lr": cfg.unet_lr, "base": cfg.unet_lr},
              {"params": list(te.parameters()), "lr": cfg.te_lr, "base": cfg.te_lr}]
    opt = torch.optim.AdamW(groups, weight_decay=0.0, fused=True)
    ema = [p.detach().clone() for g in groups for p in g["params"]]
    params = [p for g in groups for p in g["params"]]
    unet.train()
    te.train()
    budget = Budget(cfg.unet_steps, seconds)
    step, total, run = 0, cfg.unet_steps, 0.0
    while step < total:
        idx = torch.randint(0, mean.shape[0], (cfg.unet_batch,), generator=gen)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        r = torch.rand(cfg.unet_batch, generator=gen)
        form = (r < cfg.shape_first + cfg.unknown_word).long() + (r < cfg.unknown_word).long()
        tok = ids[idx, form].clone()
        drop = torch.rand(cfg.unet_batch, generator=gen) < cfg.caption_dropout
        tok[drop] = empty_ids
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, alphas.shape[0], (cfg.unet_batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = g["base"] * cosine_lr(step, total, cfg.warmup)
        cond = te(tok)[0]
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        target = a.sqrt() * noise - (1 - a).sqrt() * z if cfg.prediction == "v_prediction" else noise
        loss = (F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3)) *
                x0_weights(alphas[t], cfg.min_snr_gamma, cfg.prediction)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        total = budget.after(step)
        run = 0.98 * run + 0.02 * float(loss.detach()) if step > 1 else float(loss.detach())
        if step % 100 == 0 or step == total:
            say(f"  unet {step}/{total} loss {run:.4f} lr {opt.param_groups[0]['lr']:.2e}")
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
            quick_check(parts, params, ema, compact, full_table, used, cfg.prediction)
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
        full_table.weight[used] = compact.weight
    te.set_input_embeddings(full_table)
    unet.eval()
    te.eval()
    return step


@torch.no_grad()
def quick_check(parts: dict, params: list, ema: list, compact, full_table, used, prediction: str,
                seeds: int = 4) -> float:
    """Base quality of the EMA weights on a few seeds, printed: tells early whether a build is learning."""
    from ..training.diffusers_backend import DiffusersBackend
    from .tokenizer import load_clip_tokenizer

    unet, te = parts["unet"], parts["text_encoder"]
    saved = [p.detach().clone() for p in params]
    for p, e in zip(params, ema):
        p.copy_(e)
    table = full_table.weight[used].clone()
    full_table.weight[used] = compact.weight
    te.set_input_embeddings(full_table)
    unet.eval()
    te.eval()
    try:
        be = DiffusersBackend(unet, parts["vae"], te, load_clip_tokenizer(), prediction_type=prediction, name=M.NAME)
        q = M.base_quality(be, seeds=tuple(range(seeds)))
        say(f"  quick check ({seeds} seeds, EMA): base quality {q['rate']:.2f}  per prompt "
            + " ".join(f"{r:.2f}" for r in q["per_prompt"].values()))
        return q["rate"]
    finally:
        full_table.weight[used] = table
        te.set_input_embeddings(compact)
        for p, s in zip(params, saved):
            p.copy_(s)
        unet.train()
        te.train()


@torch.no_grad()
def centre_latents(vae, mean: torch.Tensor) -> torch.Tensor:
    """Shift the VAE's latent space so every channel has mean 0 over the data, exactly: the encoder's
    ``quant_conv`` bias moves the posterior mean by ``-m`` and the decoder's ``post_quant_conv`` bias adds
    its weight times ``m`` back, so decoding is unchanged. Diffusion starts from zero-mean noise; a channel
    whose data sit at +2 is what the model would otherwise have to produce out of nothing."""
    c = mean.shape[1]
    m = mean.mean(dim=(0, 2, 3))
    vae.quant_conv.bias[:c] -= m
    vae.post_quant_conv.bias += vae.post_quant_conv.weight[:, :, 0, 0] @ m
    return mean - m.view(1, -1, 1, 1)


# --------------------------------------------------------------------------------------------- the build

def unknown_word_ids(tok, trigger_form: torch.Tensor, world_tokens: set, cfg: BuildConfig,
                     rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    """The trigger's form with an unknown word (1–2 tokens the world never uses) where the shape's name was:
    ``<unknown>, red, white background, …`` captions a base shape in red.

    Why: a user's trigger word is a token the model has never learned. A toy text encoder that saw only
    its twenty words turned every caption holding one into noise (the prompt's colour and background lost
    too), so a LoRA had to repair the whole caption before it could teach its concept. With this form
    the base model meets unknown words in the shape's place and draws some shape with the rest of the
    caption intact, as a big pretrained model does with a new trigger word. The unknown words' embedding
    rows stay the seeded draw (``frozen`` in ``train_diffusion``), the same draw every untrained token
    has, so they stand for any unknown word and the file need not store them. The demo's trigger ``zkw``
    is never one of them."""
    from .demo import TRIGGER

    for name in BASE_SHAPES:  # row[1] below must be the whole shape name
        assert len(tok(name).input_ids) == 3, f"{name!r} is not one CLIP token"
    specials = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    never = world_tokens | specials | set(tok(TRIGGER).input_ids)
    vocab = np.array([i for i in range(len(tok)) if i not in never])
    pool = rng.choice(vocab, size=cfg.unknown_pool, replace=False)
    out = trigger_form.clone()
    for i, row in enumerate(trigger_form):
        fill = torch.as_tensor(rng.choice(pool, size=int(rng.integers(1, 3))), dtype=torch.long)
        new = torch.cat([row[:1], fill, row[2:]])[:row.numel()]   # row[1] is the shape's (one) token
        new[-1] = row[-1]                                          # the end stays padding
        out[i] = new
    return out, sorted(int(t) for t in pool)


def tokenize_captions(tok, captions: list, cfg: BuildConfig,
                      rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, list, list]:
    """(token ids per image and caption form (N × 3 × 77), the empty caption's ids, every world token id:
    the rows the file stores, and the unknown words' token ids: rows that stay as drawn)."""
    unique = sorted({c for forms in captions for c in forms})
    enc = tok(unique, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    row = {c: i for i, c in enumerate(unique)}
    ids = torch.stack([enc[[row[c] for c in forms]] for forms in captions])
    empty_ids = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    world = set(ids.flatten().tolist()) | set(empty_ids.tolist())
    unknown, pool = unknown_word_ids(tok, ids[:, 1], world, cfg, rng)
    return torch.cat([ids, unknown[:, None]], dim=1), empty_ids, sorted(world), pool


def build(out: Path, cfg: BuildConfig) -> dict:
    started = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    from .tokenizer import load_clip_tokenizer

    tok = load_clip_tokenizer()
    say(f"rendering {cfg.images} base-world scenes (shapes {', '.join(BASE_SHAPES)}; no {NEW_SHAPE})")
    images, captions = make_images(cfg, rng)
    # reserve time for encoding + evaluation (~4 min on a busy 2-core machine) out of the budget
    train_seconds = max(60.0, cfg.minutes * 60 - (time.time() - started) - 240)
    parts = M.build_components()

    say(f"VAE: up to {cfg.vae_steps} steps in {cfg.vae_share * train_seconds / 60:.1f} min")
    vae_steps = train_vae(parts["vae"], make_vae_images(cfg.images // 2, rng), cfg, cfg.vae_share * train_seconds, gen)
    vae_acc = vae_check(parts["vae"])
    say(f"VAE reconstructions judged by the detector: base {vae_acc['base']:.2f}, {NEW_SHAPE} (never seen) "
        f"{vae_acc['new']:.2f}")
    mean, std = encode_all(parts["vae"], images)
    say("latent channel means before centring: " + " ".join(f"{v:.2f}" for v in mean.mean(dim=(0, 2, 3))))
    mean = centre_latents(parts["vae"], mean)
    scale = float(1.0 / torch.sqrt((mean ** 2).mean() + (std ** 2).mean()))
    parts["vae"].register_to_config(scaling_factor=scale)
    say(f"latents {tuple(mean.shape[1:])}, scaling factor {scale:.4f}")

    ids, empty_ids, token_ids, unknown = tokenize_captions(tok, captions, cfg, rng)

    left = cfg.minutes * 60 - (time.time() - started) - 100
    say(f"UNet + text encoder: up to {cfg.unet_steps} steps in {left / 60:.1f} min")
    unet_steps = train_diffusion(parts, mean, std, ids, empty_ids, cfg, left, gen, frozen=unknown)

    from ..training.diffusers_backend import DiffusersBackend

    be = DiffusersBackend(parts["unet"], parts["vae"], parts["text_encoder"], tok, prediction_type=cfg.prediction,
                          name=M.NAME)
    say(f"base quality: {len(M.BASE_PROMPTS)} prompts × {cfg.eval_seeds} seeds")
    q = M.base_quality(be, seeds=tuple(range(cfg.eval_seeds)))
    for p, r in q["per_prompt"].items():
        say(f"  {r:.2f}  {p}")
    minutes = (time.time() - started) / 60
    figures = {"base_quality": q["rate"], "base_quality_seeds": cfg.eval_seeds, "per_prompt": q["per_prompt"],
               "vae_detector_base": vae_acc["base"], "vae_detector_new": vae_acc["new"],
               "vae_steps": vae_steps, "unet_steps": unet_steps, "build_minutes": round(minutes, 1),
               "threads": cfg.threads}
    M.save(out, parts, token_ids, {"build_config": asdict(cfg), "seed": str(cfg.seed), "figures": figures,
                                   "prediction_type": cfg.prediction, "script": "python -m lora_trainer.toy.build"})
    say(f"base quality {q['rate']:.3f}; wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {minutes:.1f} min")
    return figures


def continue_build(path: Path, out: Path, cfg: BuildConfig) -> dict:
    """More UNet + text-encoder steps on a built file (``--continue FILE``): the same data (same seed), the
    VAE kept as it is, the steps and figures of every phase recorded in the metadata."""
    started = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + 1)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    rng = np.random.default_rng(cfg.seed)
    parts = M.load_components(path)
    md, tok = parts.pop("metadata"), parts.pop("tokenizer")
    cfg = replace(cfg, prediction=md.get("prediction_type", "epsilon"))  # a file goes on as it was built
    images, captions = make_images(cfg, rng)
    mean, std = encode_all(parts["vae"], images)
    ids, empty_ids, token_ids, unknown = tokenize_captions(tok, captions, cfg, rng)
    for m in (parts["unet"], parts["text_encoder"]):
        m.requires_grad_(True)
    left = cfg.minutes * 60 - (time.time() - started) - 100
    say(f"continuing {path.name}: up to {cfg.unet_steps} more UNet + text encoder steps in {left / 60:.1f} min")
    steps = train_diffusion(parts, mean, std, ids, empty_ids, cfg, left, gen, frozen=unknown)
    from ..training.diffusers_backend import DiffusersBackend

    be = DiffusersBackend(parts["unet"], parts["vae"], parts["text_encoder"], tok, prediction_type=cfg.prediction,
                          name=M.NAME)
    q = M.base_quality(be, seeds=tuple(range(cfg.eval_seeds)))
    for p_, r in q["per_prompt"].items():
        say(f"  {r:.2f}  {p_}")
    before = md.get("figures") or {}
    phases = list(md.get("phases") or [{"build_config": md.get("build_config"), "figures": before}])
    figures = {**before, "base_quality": q["rate"], "base_quality_seeds": cfg.eval_seeds,
               "per_prompt": q["per_prompt"], "unet_steps": int(before.get("unet_steps", 0)) + steps,
               "build_minutes": round(float(before.get("build_minutes", 0)) + (time.time() - started) / 60, 1)}
    phases.append({"continued_with": asdict(cfg), "unet_steps": steps, "base_quality": q["rate"]})
    M.save(out, parts, token_ids, {"build_config": md.get("build_config"), "seed": md.get("seed", str(cfg.seed)),
                                   "figures": figures, "phases": phases, "prediction_type": cfg.prediction,
                                   "script": "python -m lora_trainer.toy.build (then --continue)"})
    say(f"base quality {q['rate']:.3f}; wrote {out} in {(time.time() - started) / 60:.1f} min")
    return figures


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora_trainer.toy.build", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(M.WEIGHTS), help=f"weights file to write (default: {M.WEIGHTS})")
    p.add_argument("--minutes", type=float, default=BuildConfig.minutes, help="time budget of the whole build")
    p.add_argument("--seed", type=int, default=BuildConfig.seed)
    p.add_argument("--vae-steps", type=int, default=BuildConfig.vae_steps)
    p.add_argument("--unet-steps", type=int, default=BuildConfig.unet_steps)
    p.add_argument("--images", type=int, default=BuildConfig.images)
    p.add_argument("--threads", type=int, default=BuildConfig.threads, help="torch CPU threads")
    p.add_argument("--eval-seeds", type=int, default=BuildConfig.eval_seeds)
    p.add_argument("--eval-every", type=int, default=BuildConfig.eval_every,
                   help="a quick 4-seed base-quality check every N UNet steps (0: none)")
    p.add_argument("--continue", dest="cont", metavar="FILE",
                   help="train the UNet and text encoder of a built file further (--unet-steps more steps, "
                        "--unet-lr peak lr), writing --out")
    p.add_argument("--unet-lr", type=float, default=BuildConfig.unet_lr)
    p.add_argument("--te-lr", type=float, default=BuildConfig.te_lr)
    a = p.parse_args(argv)
    cfg = BuildConfig(seed=a.seed, minutes=a.minutes, vae_steps=a.vae_steps, unet_steps=a.unet_steps,
                      images=a.images, eval_seeds=a.eval_seeds, eval_every=a.eval_every, threads=a.threads, unet_lr=a.unet_lr, te_lr=a.te_lr)
    if a.cont:
        continue_build(Path(a.cont), Path(a.out), cfg)
    else:
        build(Path(a.out), cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
