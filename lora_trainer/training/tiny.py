"""A tiny random SD-shaped model built in code (OFFLINE.md "Tiny Stable Diffusion models").

Serves tests and benchmarks; it learns nothing. The embedded toy model (``lora_trainer.toy``) is the
default of every command once it is built.
"""

from __future__ import annotations

from typing import Optional

import torch


def tiny_components(seed: int = 0, cross_attention_dim: int = 32, sample_size: int = 32,
                    tokenizer=None) -> dict:
    """UNet (~1.1 M params), VAE (scale factor 2), CLIP text encoder (hidden 32, 2 layers), tokenizer."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 64),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, layers_per_block=1, norm_num_groups=32, sample_size=64)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=cross_attention_dim, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, vocab_size=49408, max_position_embeddings=77,
                                      bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    if tokenizer is None:
        from ..toy.tokenizer import load_clip_tokenizer
        tokenizer = load_clip_tokenizer()
    return {"unet": unet, "vae": vae, "text_encoder": te, "tokenizer": tokenizer}


def tiny_backend(seed: int = 0, device: Optional[torch.device] = None, **kw):
    from .diffusers_backend import DiffusersBackend

    c = tiny_components(seed)
    return DiffusersBackend(c["unet"], c["vae"], c["text_encoder"], c["tokenizer"], device=device,
                            name="tiny-random", **kw)


def tiny_dataset(folder, n: int = 6, size: int = 64, seed: int = 0, repeats: int = 2, name: str = "tiny",
                 caption_prefix: str = "tok") -> "object":
    """A kohya folder ``<repeats>_<name>`` of simple coloured images with captions (learnable target)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    d = Path(folder) / f"{repeats}_{name}"
    d.mkdir(parents=True, exist_ok=True)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    keys = list(colours)
    for i in range(n):
        c = keys[i % len(keys)]
        arr = np.full((size, size, 3), 245, np.uint8)
        x0, y0 = rng.integers(0, size // 2, 2)
        s = size // 2
        arr[y0:y0 + s, x0:x0 + s] = colours[c]
        Image.fromarray(arr).save(d / f"{i:03d}.png")
        (d / f"{i:03d}.txt").write_text(f"{caption_prefix}, {c} square", encoding="utf-8")
    return d
