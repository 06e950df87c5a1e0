"""The ``ModelBackend`` seam: what the training core needs from a model, and nothing else.

One training core runs on the WebUI's loaded ldm ``LatentDiffusion`` (``LdmBackend``, wrapped by the host
adapter) and on a diffusers model loaded standalone (``DiffusersBackend``). The core never asks which.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")


@runtime_checkable
class ModelBackend(Protocol):
    """A diffusion model as the trainer sees it.

    Attributes:
        family: one of FAMILIES.
        prediction_type: ``"epsilon"`` or ``"v_prediction"``.
        device: where training runs.
        dtype: dtype of the frozen base weights (fp16 on a half-precision host, fp32 on CPU).
        name: a short model name for the metadata (``ss_sd_model_name``).
        te_trainable: False where the text encoder cannot carry LoRA (SD2 inside the WebUI).
    """

    family: str
    prediction_type: str
    device: torch.device
    dtype: torch.dtype
    name: str
    te_trainable: bool

    def alphas_cumprod(self) -> torch.Tensor:
        """The model's own noise schedule, float32, length = number of train timesteps."""
        ...

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] (N,3,H,W) -> latents already multiplied by the VAE scale factor. No grad."""
        ...

    def encode_text(self, captions: Sequence[str]) -> torch.Tensor:
        """Captions -> conditioning, with grad when the text encoder carries LoRA."""
        ...

    def denoise(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor,
                conditioning: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction (eps or v, per ``prediction_type``)."""
        ...

    def lora_targets(self, part: str, conv: bool = False) -> dict[str, nn.Module]:
        """``{kohya_name: module}`` for ``part`` in ("unet", "te").

        Names are kohya's canonical ones (``lora_unet_down_blocks_0_attentions_0_…``,
        ``lora_te_text_model_encoder_layers_0_self_attn_q_proj``) whatever the backend calls its modules.
        ``conv=True`` adds the UNet's ResNet/sampler convolutions (LoCon).
        """
        ...

    def modules(self) -> dict[str, nn.Module]:
        """The trainable-side modules by role: ``{"unet": …, "te": …}`` (for freezing, checkpointing)."""
        ...


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Freeze every parameter of ``modules`` (requires_grad False) and restore each flag afterwards.

    Host models arrive with ``requires_grad=True`` on the UNet (WEBUI_API.md §3.2); leaving them would
    allocate a gradient for every base weight. Training mode is not touched: we stay in eval mode.
    """
    saved: list[tuple[nn.Parameter, bool]] = []
    seen: set[int] = set()
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            saved.append((p, p.requires_grad))
            p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def scaled_linear_alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                                 beta_end: float = 0.012) -> torch.Tensor:
    """SD's scaled-linear schedule in float32 (what ldm and diffusers' SD configs both use)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor onto ``device`` without a host synchronisation: a plain copy from pageable memory to a
    GPU waits for the stream, so on CUDA it goes through pinned memory (PyTorch's caching host allocator,
    cheap to repeat) as a non-blocking copy. Elsewhere a plain ``.to``."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
