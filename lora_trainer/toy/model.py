"""The embedded toy model: a tiny SD1-shaped text-to-image model that knows the toy world.

Why it exists: on a fresh CPU machine with no download, ``demo`` (and every command run without
``--base-model``) must show a LoRA teaching a model something real. Random weights only prove plumbing;
this model was trained (``python -m lora_trainer.toy.build``) on the base world (circle, square, triangle
and frame in four colours on white/black/gray) and has never seen a ring, so a ring LoRA is a visible new
concept.

Architecture = Stable Diffusion 1.x at toy scale, so the trainer, the kohya key names and the generator
are exactly the ones a real SD1 model uses:

- ``AutoencoderKL`` with three blocks (×4 down): a 64×64 image is a 16×16×4 latent;
- ``UNet2DConditionModel`` with cross-attention in every block (channels 32/64/128): every LoRA target
  is at least 32 wide, so the toy preset's rank 8 always fits;
- ``CLIPTextModel`` (hidden 64, 2 layers) behind the real 49,408-token CLIP tokenizer.

The weights file is small because the text encoder's token table is not stored whole: rows the build
never trained are a seeded random draw (:func:`base_token_embedding`), regenerated at load; only the
trained rows are in the file. Metadata holds the build's config, seed and measured figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from ..config import TOY_SAMPLING

WEIGHTS = Path(__file__).with_name("weights") / "toy_model.safetensors"
FORMAT = "lora-trainer-toy/1"
NAME = "lora-trainer-toy"
TOKEN_SEED = 1234          # seed of the untrained token-embedding rows (regenerated at load)
TOKEN_STD = 0.02           # CLIP's own initialiser scale
LATENT_SIZE = 16
IMAGE_SIZE = 64

VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 64), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    norm_num_groups=8, sample_size=IMAGE_SIZE, mid_block_add_attention=False)
UNET_CONFIG = dict(
    sample_size=LATENT_SIZE, in_channels=4, out_channels=4, block_out_channels=(32, 64, 128), layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=64, attention_head_dim=(2, 4, 8), norm_num_groups=32)
TE_CONFIG = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=49408,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=64,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)

# The base-quality check (issue: 8 prompts of the base world × 64 fixed seeds, ≥ 70% right).
BASE_PROMPTS = (
    ("red circle, white background, large, center", "circle", "red"),
    ("blue square, black background, large, center", "square", "blue"),
    ("green triangle, gray background, large, center", "triangle", "green"),
    ("yellow circle, black background, small, top left", "circle", "yellow"),
    ("red square, gray background, large, bottom right", "square", "red"),
    ("blue triangle, white background, small, center", "triangle", "blue"),
    ("green frame, gray background, large, top right", "frame", "green"),
    ("yellow square, white background, small, bottom left", "square", "yellow"),
)
# How the toy model samples (config.TOY_SAMPLING, also the CLI's and the tab's defaults on it): CFG 3 gives
# base quality on 8×16 seeds 0.984 (5.0: 0.945); a ring LoRA on a frame world: 91 % (5.0: 66 %).
SAMPLE_STEPS = int(TOY_SAMPLING["steps"])
CFG_SCALE = float(TOY_SAMPLING["cfg_scale"])

PathLike = Union[str, Path]


def available(path: Optional[PathLike] = None) -> bool:
    """True when the weights file is there and diffusers/transformers can build the model."""
    import importlib.util

    p = Path(path) if path is not None else WEIGHTS
    return p.is_file() and all(importlib.util.find_spec(m) is not None for m in ("diffusers", "transformers"))


# --------------------------------------------------------------------------------------------- building

def base_token_embedding(vocab: int = TE_CONFIG["vocab_size"], dim: int = TE_CONFIG["hidden_size"]) -> torch.Tensor:
    """The token table before training: a seeded draw, so untrained rows need not be stored."""
    g = torch.Generator(device="cpu").manual_seed(TOKEN_SEED)
    return torch.randn(vocab, dim, generator=g) * TOKEN_STD


def build_components(scaling_factor: float = 1.0) -> dict:
    """Fresh (untrained) VAE, UNet and text encoder with the fixed configs; token table seeded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vae = AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    te = CLIPTextModel(CLIPTextConfig(**TE_CONFIG))
    with torch.no_grad():
        te.get_input_embeddings().weight.copy_(base_token_embedding())
    return {"vae": vae, "unet": unet, "text_encoder": te}


def _te_key(key: str, te) -> str:
    """Our file stores text-encoder keys without ``text_model.`` (transformers 5); add it back for 4.x."""
    has_prefix = any(k.startswith("text_model.") for k in te.state_dict())
    return "text_model." + key if has_prefix and not key.startswith("text_model.") else key


def _strip_te(key: str) -> str:
    return key[len("text_model."):] if key.startswith("text_model.") else key


TOKEN_KEY = "embeddings.token_embedding.weight"


def state_for_file(parts: dict, token_ids: Sequence[int], dtype: torch.dtype = torch.float16) -> dict:
    """Tensors to save: all of VAE and UNet, the text encoder without its token table plus the trained rows."""
    out = {}
    for k, v in parts["vae"].state_dict().items():
        out["vae." + k] = v.detach().to(dtype).contiguous()
    for k, v in parts["unet"].state_dict().items():
        out["unet." + k] = v.detach().to(dtype).contiguous()
    for k, v in parts["text_encoder"].state_dict().items():
        k = _strip_te(k)
        if k == TOKEN_KEY or "position_ids" in k:
            continue
        out["te." + k] = v.detach().to(dtype).contiguous()
    ids = torch.tensor(sorted(set(int(i) for i in token_ids)), dtype=torch.int64)
    table = parts["text_encoder"].get_input_embeddings().weight.detach()
    out["te_tokens.ids"] = ids
    out["te_tokens.rows"] = table[ids].to(torch.float32).contiguous()  # embedding rows kept exact
    return out


def save(path: PathLike, parts: dict, token_ids: Sequence[int], metadata: dict) -> Path:
    """Write the weights atomically (temporary name in the same folder, then rename)."""
    from safetensors.torch import save_file

    from ..workspace import atomic_path

    md = {"format": FORMAT, "scaling_factor": repr(float(parts["vae"].config.scaling_factor))}
    md.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = state_for_file(parts, token_ids)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=md)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the file ships in the package
    return path


def read_metadata(path: Optional[PathLike] = None) -> dict:
    """The file's metadata, JSON values decoded."""
    from safetensors import safe_open

    with safe_open(str(path or WEIGHTS), framework="pt") as f:
        raw = f.metadata() or {}
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def load_components(path: Optional[PathLike] = None) -> dict:
    """VAE, UNet, text encoder (float32, eval mode) and the real CLIP tokenizer, from the shipped file."""
    from safetensors.torch import load_file

    from ..errors import UserError
    from .tokenizer import load_clip_tokenizer

    p = Path(path) if path is not None else WEIGHTS
    if not p.is_file():
        raise UserError(f"the toy model's weights are missing ({p})",
                        "build them with `python -m lora_trainer.toy.build`")
    md = read_metadata(p)
    if md.get("format") != FORMAT:
        raise UserError(f"{p.name} is not a toy-model file ({md.get('format')!r})", "rebuild it")
    tensors = load_file(str(p))
    parts = build_components(float(md["scaling_factor"]))
    groups: dict = {"vae": {}, "unet": {}, "te": {}}
    for k, v in tensors.items():
        head, _, rest = k.partition(".")
        if head in groups:
            groups[head][rest] = v.float()
    te = parts["text_encoder"]
    table = base_token_embedding()
    table[tensors["te_tokens.ids"]] = tensors["te_tokens.rows"].float()
    groups["te"][TOKEN_KEY] = table
    te_sd = {_te_key(k, te): v for k, v in groups["te"].items()}
    for name, sd, model in (("vae", groups["vae"], parts["vae"]), ("unet", groups["unet"], parts["unet"]),
                            ("text encoder", te_sd, te)):
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [m for m in missing if "position_ids" not in m]
        if missing or unexpected:
            raise UserError(f"{p.name}: the {name} weights do not fit the toy architecture "
                            f"(missing {missing[:2]}, unexpected {unexpected[:2]})", "rebuild the toy model")
    for m in (parts["vae"], parts["unet"], te):
        m.eval()
    parts["tokenizer"] = load_clip_tokenizer()
    parts["metadata"] = md
    return parts


def backend(device: Optional[torch.device] = None, path: Optional[PathLike] = None):
    """The toy model as a ``DiffusersBackend`` (family sd1, name ``lora-trainer-toy``; it predicts v, as the
    file's ``prediction_type`` says)."""
    from ..training.diffusers_backend import DiffusersBackend

    c = load_components(path)
    return DiffusersBackend(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], family="sd1",
                            prediction_type=c["metadata"].get("prediction_type", "epsilon"),
                            device=device or torch.device("cpu"), name=NAME)


# --------------------------------------------------------------------------------------------- data

def demo_dataset(folder: PathLike, n: int = 20, seed: int = 7) -> Path:
    """A kohya folder ``<folder>/10_toy`` of ``n`` base-world images with captions (made once).

    What ``train``/``estimate`` use when ``--data`` is omitted: the world the model already knows, so a
    run on it exercises the full path and finishes in seconds.
    """
    import numpy as np

    from .world import NEUTRAL_BACKGROUNDS, make_dataset

    root = Path(folder)
    sub = root / "10_toy"
    if len(list(sub.glob("*.png"))) >= n and len(list(sub.glob("*.txt"))) >= n:
        return root
    make_dataset(sub, n, np.random.default_rng(seed), backgrounds=NEUTRAL_BACKGROUNDS)
    return root


# --------------------------------------------------------------------------------------------- sampling

def sample(be, prompts: Sequence[str], seeds: Sequence[int], **kw) -> list:
    """One PIL image per (prompt, seed), prompt-major like ``DiffusersGenerator.generate``."""
    return sample_pairs(be, [(p, s) for p in prompts for s in seeds], **kw)


@torch.no_grad()
def sample_pairs(be, pairs: Sequence[tuple], *, steps: int = SAMPLE_STEPS, cfg_scale: float = CFG_SCALE,
                 negative: str = "", batch: int = 64, progress: Optional[Callable[[int, int], None]] = None) -> list:
    """One PIL image per ``(prompt, seed)`` pair, batched.

    Same scheduler, initial noise per seed and guidance as the diffusers pipeline ``DiffusersGenerator``
    runs, but a whole batch of seeds goes through the UNet at once: 64 images cost about what 4 cost
    one by one. Attach a LoRA around the call to sample with it. ``progress(done, total)`` is called after
    every denoising step with the images done so far (fractions of a batch rounded down), since one batch
    can take minutes on a busy CPU.
    """
    from PIL import Image

    from ..generate import DEFAULT_SAMPLER, diffusers_scheduler

    unet, vae = be.unet, be.vae
    unique = list(dict.fromkeys(p for p, _ in pairs))
    cond_of = dict(zip(unique, be.encode_text(unique)))
    uncond = be.encode_text([negative])[0]
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    images = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        sched = diffusers_scheduler(DEFAULT_SAMPLER, be.prediction_type)
        sched.set_timesteps(steps)
        x = torch.cat([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s)))
                       for _, s in chunk]).to(be.device, be.dtype) * sched.init_noise_sigma
        cond = torch.stack([uncond] * len(chunk) + [cond_of[p] for p, _ in chunk]).to(be.device, be.dtype)
        k = 0
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([x, x]), t)
            eps_u, eps_c = unet(inp, t, encoder_hidden_states=cond).sample.chunk(2)
            x = sched.step(eps_u + cfg_scale * (eps_c - eps_u), t, x).prev_sample
            k += 1
            if progress is not None:
                progress(start + len(chunk) * k // len(sched.timesteps), len(pairs))
        px = vae.decode(x / vae.config.scaling_factor).sample
        arr = ((px.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        images += [Image.fromarray(a, "RGB") for a in arr]
    return images


def base_quality(be, seeds: Sequence[int] = tuple(range(64)), prompts=BASE_PROMPTS, **kw) -> dict:
    """Fraction of generations where the detector finds the prompted shape AND colour; per prompt too."""
    from .detector import matches

    imgs = sample(be, [p for p, _, _ in prompts], seeds, **kw)
    per, k = {}, 0
    for prompt, shape, colour in prompts:
        hits = sum(matches(imgs[k + i], shape=shape, colour=colour) for i in range(len(seeds)))
        per[prompt] = hits / len(seeds)
        k += len(seeds)
    return {"rate": sum(per.values()) / len(per), "per_prompt": per, "seeds": len(seeds)}
