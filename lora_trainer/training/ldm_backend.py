"""``LdmBackend``: the ``ModelBackend`` seam over an ldm ``LatentDiffusion`` (the WebUI's SD1/SD2 model).

It imports nothing from the WebUI and nothing from ``ldm``: it only walks the model it is given, so the host
adapter can wrap it around ``shared.sd_model`` and tests can run it on the real ldm classes. Module names come
out in kohya's canonical (diffusers-derived) form through ``names.py``, so a file trained here has exactly the
keys of a file trained standalone.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import UserError
from . import names
from .backend import scaled_linear_alphas_cumprod

# kohya's networks.lora targets: Linear / 1x1 Conv2d inside these blocks (ldm class names) ...
_UNET_ATTN_BLOCKS = ("SpatialTransformer",)
# ... and, for LoCon (conv=True), every Linear / Conv2d inside these (3x3 convs at the conv rank).
_UNET_CONV_BLOCKS = ("ResBlock", "Downsample", "Upsample")
# transformers' CLIP attention classes across 4.30 .. 5.x, and the MLP.
_TE_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")

_PREDICTION = {"eps": "epsilon", "v": "v_prediction"}


def _is_1x1(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)


def _unet_layout(unet: nn.Module) -> tuple[int, int]:
    """(num_res_blocks, num_levels) of an ldm UNetModel; ldm stores num_res_blocks as one int per level."""
    per_level = list(getattr(unet, "num_res_blocks"))
    if len(set(per_level)) != 1:
        raise UserError(f"This UNet has a different number of res blocks per level ({per_level}).",
                        "Only SD1.x / SD2.x style UNets are supported for training.")
    return int(per_level[0]), len(list(unet.channel_mult))


def ldm_unet_lora_targets(unet: nn.Module, conv: bool = False) -> dict[str, nn.Module]:
    """``{kohya_name: module}`` for an ldm ``UNetModel``, as kohya's ``networks.lora`` picks them.

    Linear and 1x1 Conv2d inside every ``SpatialTransformer`` (192 on SD1.5); with ``conv`` also every Linear
    and Conv2d inside ``ResBlock`` / ``Downsample`` / ``Upsample`` (LoCon; 278 on SD1.5).
    """
    num_res_blocks, num_levels = _unet_layout(unet)
    blocks = _UNET_ATTN_BLOCKS + (_UNET_CONV_BLOCKS if conv else ())
    out: dict[str, nn.Module] = {}
    for block_path, block in unet.named_modules():
        if type(block).__name__ not in blocks:
            continue
        is_attn = type(block).__name__ in _UNET_ATTN_BLOCKS
        for sub_path, m in block.named_modules():
            if not isinstance(m, (nn.Linear, nn.Conv2d)) or not sub_path:
                continue
            if is_attn and isinstance(m, nn.Conv2d) and not _is_1x1(m):
                continue
            ldm_path = f"{block_path}.{sub_path}"
            diffusers_path = names.ldm_to_diffusers_unet(ldm_path, num_res_blocks, num_levels)
            if diffusers_path is None:
                raise RuntimeError(f"no diffusers name for ldm module {ldm_path!r}")  # a bug in names.py
            out[names.to_kohya(names.UNET_PREFIX, diffusers_path)] = m
    return out


def clip_te_lora_targets(text_model: nn.Module) -> dict[str, nn.Module]:
    """``{kohya_name: module}`` for a transformers ``CLIPTextModel``: Linear inside attention and MLP (72 on SD1).

    Names are ``lora_te_text_model_encoder_layers_N_…`` with or without ``text_model.`` in the module paths
    (transformers >= 5.6 flattens it away).
    """
    out: dict[str, nn.Module] = {}
    for block_path, block in text_model.named_modules():
        if type(block).__name__ not in _TE_BLOCKS:
            continue
        for sub_path, m in block.named_modules():
            if isinstance(m, nn.Linear) and sub_path:
                path = names.te_module_path(f"{block_path}.{sub_path}")
                out[names.to_kohya(names.TE_PREFIX, path)] = m
    return out


def _is_open_clip(wrapped: nn.Module) -> bool:
    """SD2's ``FrozenOpenCLIPEmbedder`` keeps the open_clip model in ``.model`` (``transformer.resblocks``)."""
    model = getattr(wrapped, "model", None)
    return isinstance(model, nn.Module) and hasattr(getattr(model, "transformer", None), "resblocks")


class LdmBackend:
    """``ModelBackend`` over an ldm ``LatentDiffusion`` (SD1.x, SD2.x, SD2.x-v).

    The model is used as it is: never moved, cast, put in train mode, or patched. ``device`` and ``dtype``
    default to those of the UNet's weights.
    """

    def __init__(self, model: nn.Module, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None, name: Optional[str] = None):
        if hasattr(model, "conditioner") or not hasattr(getattr(model, "model", None), "diffusion_model"):
            raise UserError("This model type cannot be trained here (SDXL and other non-SD1/SD2 models).",
                            "Load an SD1.x or SD2.x checkpoint.")
        self.model = model
        self.unet: nn.Module = model.model.diffusion_model
        csm = model.cond_stage_model
        self._text_wrapper: nn.Module = getattr(csm, "wrapped", csm)
        open_clip = _is_open_clip(self._text_wrapper)

        parameterization = getattr(model, "parameterization", "eps")
        if parameterization not in _PREDICTION:
            raise UserError(f"Unsupported parameterization {parameterization!r}.",
                            "Only eps- and v-prediction checkpoints can be trained.")
        self.prediction_type = _PREDICTION[parameterization]
        if open_clip:
            self.family = "sd2-v" if parameterization == "v" else "sd2"
        else:
            self.family = "sd1"
        self.te_trainable = not open_clip  # open_clip uses nn.MultiheadAttention: no kohya-style LoRA there

        first = next(self.unet.parameters())
        self.device = torch.device(device) if device is not None else first.device
        self.dtype = dtype if dtype is not None else first.dtype
        info = getattr(model, "sd_checkpoint_info", None)
        self.name = name or getattr(info, "model_name", None) or type(model).__name__

    # --- schedule -------------------------------------------------------------------------------------------
    def alphas_cumprod(self) -> torch.Tensor:
        """float32 schedule: ``alphas_cumprod_original`` when the host kept one, else rebuilt from the config.

        Never the live ``alphas_cumprod`` buffer: the WebUI may have cast it to fp16 or rescaled it for a
        generation (WEBUI_API.md §3.4).
        """
        original = getattr(self.model, "alphas_cumprod_original", None)
        if isinstance(original, torch.Tensor):
            return original.detach().to("cpu", torch.float32).clone()
        return scaled_linear_alphas_cumprod(int(self.model.num_timesteps), float(self.model.linear_start),
                                            float(self.model.linear_end))

    # --- the three calls of a training step -----------------------------------------------------------------
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> scaled latents (a posterior sample, in the VAE's dtype), without grad."""
        vae_dtype = next(self.model.first_stage_model.parameters()).dtype
        with torch.no_grad():
            x = pixels.to(self.device, vae_dtype)
            return self.model.get_first_stage_encoding(self.model.encode_first_stage(x)).detach()

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """``get_learned_conditioning``: on the WebUI this goes through its hijacked text encoder (emphasis,
        chunking, clip skip) exactly as generation does; gradients flow to a LoRA on the text encoder."""
        return self.model.get_learned_conditioning(list(captions))

    def denoise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor,
                conditioning: torch.Tensor) -> torch.Tensor:
        """``apply_model``. Inputs are cast to the UNet's dtype only outside autocast (the WebUI's own hijack
        of ``apply_model`` casts as well)."""
        if noisy_latents.dtype != self.dtype and not torch.is_autocast_enabled():
            noisy_latents = noisy_latents.to(self.dtype)
            conditioning = conditioning.to(self.dtype)
        return self.model.apply_model(noisy_latents, timesteps, conditioning)

    # --- where a LoRA goes ----------------------------------------------------------------------------------
    def lora_targets(self, part: str, conv: bool = False) -> dict[str, nn.Module]:
        """``{kohya_name: module}``; ``{}`` for ``te`` when the text encoder cannot carry LoRA (open_clip)."""
        if part == "unet":
            return ldm_unet_lora_targets(self.unet, conv=conv)
        if part == "te":
            return clip_te_lora_targets(self._text_wrapper.transformer) if self.te_trainable else {}
        raise ValueError(f"part must be 'unet' or 'te', not {part!r}")

    def modules(self) -> dict[str, nn.Module]:
        te = self._text_wrapper.model if _is_open_clip(self._text_wrapper) else self._text_wrapper.transformer
        return {"unet": self.unet, "te": te}

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Checkpoint the UNet's blocks for the job (instance-level wrappers, removed afterwards)."""
        set_ldm_gradient_checkpointing(self.unet, on)


_CHECKPOINTED = ("ResBlock", "BasicTransformerBlock")


def _checkpointed_forward(module: nn.Module, original):
    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return original(*args, **kwargs)
        from torch.utils.checkpoint import checkpoint

        # Non-reentrant torch checkpointing: gradients reach every parameter used inside, our LoRA
        # parameters included (ldm's own CheckpointFunction only knows the block's own parameters).
        return checkpoint(original, *args, use_reentrant=False, **kwargs)

    return forward


def set_ldm_gradient_checkpointing(unet: nn.Module, on: bool) -> int:
    """Wrap (or unwrap) the forward of every ResBlock and BasicTransformerBlock at instance level."""
    n = 0
    for m in unet.modules():
        if type(m).__name__ not in _CHECKPOINTED:
            continue
        if on and "_lt_ckpt_original" not in m.__dict__:
            m.__dict__["_lt_ckpt_original"] = m.__dict__.get("forward")
            m.forward = _checkpointed_forward(m, m.forward)
            n += 1
        elif not on and "_lt_ckpt_original" in m.__dict__:
            saved = m.__dict__.pop("_lt_ckpt_original")
            if saved is None:
                del m.__dict__["forward"]
            else:
                m.forward = saved
            n += 1
    return n

