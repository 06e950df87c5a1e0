"""``DiffusersBackend``: the ModelBackend over a diffusers UNet + VAE + CLIP text encoder.

Used standalone (a diffusers folder or a single-file ``.safetensors`` checkpoint) and for the embedded toy
model. Never touches the model hub: loading is offline, with the project's own small config files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..errors import UserError
from . import names
from .backend import scaled_linear_alphas_cumprod, to_device
from .ldm_backend import clip_te_lora_targets as select_te_targets  # one TE rule for both backends

UNET_ATTN_CLASSES = ("Transformer2DModel", "SpatialTransformer")
UNET_CONV_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")


def _is_lora_layer(m: nn.Module, conv3: bool) -> bool:
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.Conv2d):
        return m.kernel_size == (1, 1) or conv3
    return False


def select_unet_targets(unet: nn.Module, conv: bool = False) -> dict[str, nn.Module]:
    """kohya's ``networks.lora`` UNet targets on a diffusers UNet: Linear and 1×1 Conv2d inside every
    Transformer2DModel (192 on SD1.5); with ``conv`` also the ResNet/sampler layers (LoCon)."""
    out: dict[str, nn.Module] = {}
    for name, module in unet.named_modules():
        cls = type(module).__name__
        if cls in UNET_ATTN_CLASSES or (conv and cls in UNET_CONV_CLASSES):
            for child_name, child in module.named_modules():
                if child_name and _is_lora_layer(child, conv3=conv):
                    out[names.to_kohya(names.UNET_PREFIX, f"{name}.{child_name}")] = child
    return out


class DiffusersBackend:
    """ModelBackend over diffusers/transformers parts."""

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer: Any, *,
                 family: str = "sd1", prediction_type: str = "epsilon", device: Optional[torch.device] = None,
                 dtype: torch.dtype = torch.float32, name: str = "model", clip_skip: int = 1,
                 alphas_cumprod: Optional[torch.Tensor] = None):
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.family, self.prediction_type = family, prediction_type
        self.device = device or torch.device("cpu")
        self.dtype, self.name, self.clip_skip = dtype, name, clip_skip
        self.te_trainable = True
        self._alphas = alphas_cumprod if alphas_cumprod is not None else scaled_linear_alphas_cumprod()
        self.scaling_factor = float(getattr(getattr(vae, "config", None), "scaling_factor", 0.18215))
        for m in (unet, vae, text_encoder):
            if next(m.parameters()).dtype != dtype:
                m.to(dtype=dtype)
            m.to(self.device)
            m.eval()

    # ---- the protocol --------------------------------------------------------------------------------
    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas.float()

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        # A posterior sample from the global RNG: the trainer seeds it (in a forked RNG) while caching.
        return self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist.sample() * self.scaling_factor

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(captions), padding="max_length", truncation=True,
                              max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        ids = to_device(self.tokenize(captions), self.device)
        if self.clip_skip <= 1:
            return self.text_encoder(ids)[0]
        out = self.text_encoder(ids, output_hidden_states=True)
        hidden = out.hidden_states[-self.clip_skip]
        final_norm = getattr(getattr(self.text_encoder, "text_model", self.text_encoder), "final_layer_norm")
        return final_norm(hidden)

    def denoise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy_latents, timesteps, encoder_hidden_states=conditioning).sample

    def lora_targets(self, part: str, conv: bool = False) -> dict[str, nn.Module]:
        if part == "unet":
            return select_unet_targets(self.unet, conv)
        if part == "te":
            return select_te_targets(self.text_encoder)
        raise ValueError(part)

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.unet, "te": self.text_encoder, "vae": self.vae}

    def set_gradient_checkpointing(self, on: bool) -> None:
        # transformers 5 renamed the text encoder's switch (the old name warns, and goes in v6); the WebUI's
        # 4.30 has only the old one.
        te = self.text_encoder
        if on:
            self.unet.enable_gradient_checkpointing()
            (getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable)()
        else:
            self.unet.disable_gradient_checkpointing()
            (getattr(te, "activation_checkpointing_disable", None) or te.gradient_checkpointing_disable)()

    # ---- loading -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32,
             prediction: str = "auto", clip_skip: int = 1) -> "DiffusersBackend":
        """A diffusers folder, or a single-file ``.safetensors`` checkpoint (SD1.x / SD2.x)."""
        from .model_loading import load_components

        parts = load_components(Path(path), prediction=prediction)
        return cls(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"], family=parts["family"],
                   prediction_type=parts["prediction_type"], device=device, dtype=dtype, name=parts["name"],
                   clip_skip=clip_skip, alphas_cumprod=parts["alphas_cumprod"])


def require_diffusers() -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise UserError("this needs diffusers, which is not installed here",
                        "inside the WebUI train on the loaded checkpoint; standalone: pip install diffusers") from None
