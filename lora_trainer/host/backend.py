"""``HostBackend``: LoRA training on the WebUI's loaded checkpoint, in place.

The UNet, text encoder and VAE of ``shared.sd_model`` are used as they are: no copy, no cast, no move, no
train mode, the host's attention optimisation left on. Before a job the builtin Lora's merged weights are
restored (a LoRA used in the last generation stays merged in the base weights otherwise, WEBUI_API.md §13),
and models that cannot be trained in place are refused with a message saying what to do.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Optional

import torch

from ..errors import UserError
from ..training.ldm_backend import LdmBackend
from .env import cmd_opt, host_kind, lora_networks, m

log = logging.getLogger("lora_trainer")

FORGE2 = UserError("Forge 2 loads the checkpoint as inference tensors, which cannot be trained in place",
                   "train standalone (python -m lora_trainer train --base-model <checkpoint>) or in "
                   "A1111 WebUI 1.6-1.10 / Forge 1")


def _unet(sd_model: Any) -> Optional[torch.nn.Module]:
    return getattr(getattr(sd_model, "model", None), "diffusion_model", None)


def model_family(sd_model: Any) -> Optional[str]:
    """sd1, sd2, sd2-v, sdxl, sd3, or None when nothing is loaded (from the flags ``set_model_type`` sets)."""
    if sd_model is None:
        return None
    if getattr(sd_model, "is_sd3", False):
        return "sd3"
    if getattr(sd_model, "is_sdxl", False) or hasattr(sd_model, "conditioner"):
        return "sdxl"
    if getattr(sd_model, "is_sd2", False):
        return "sd2-v" if getattr(sd_model, "parameterization", "eps") == "v" else "sd2"
    return "sd1"


def refusal(sd_model: Any) -> Optional[UserError]:
    """Why this model cannot be trained here (as the UserError a job raises), or None."""
    if host_kind() == "forge2":
        return FORGE2
    if sd_model is None:
        return UserError("no checkpoint is loaded", "choose one in the WebUI's checkpoint list, then retry")
    family = model_family(sd_model)
    if family == "sd3":
        return UserError("SD3 checkpoints cannot be trained here", "load an SD1.x or SD2.x checkpoint")
    if family == "sdxl":
        return UserError("SDXL training inside the WebUI is not available yet",
                         "load an SD1.x or SD2.x checkpoint, or train SDXL with another tool for now")
    unet = _unet(sd_model)
    if unet is None or getattr(sd_model, "cond_stage_model", None) is None:
        return FORGE2 if hasattr(sd_model, "forge_objects") else UserError(
            f"this model ({type(sd_model).__name__}) is not an ldm LatentDiffusion", "load an SD1.x/SD2.x checkpoint")
    if cmd_opt("lowvram", False):
        return UserError("training is not possible with --lowvram (the UNet is split between CPU and GPU "
                         "block by block)", "restart the WebUI without --lowvram (--medvram works)")
    first = next(unet.parameters(), None)
    if getattr(m("devices"), "fp8", False) or (first is not None and "float8" in str(first.dtype)):
        return UserError("the checkpoint is stored in fp8, which cannot be trained",
                         "set Settings > Optimizations > FP8 weight to Disable and reload the checkpoint")
    if first is not None and first.is_inference():
        return FORGE2
    if getattr(m("sd_unet"), "current_unet", None) is not None:
        return UserError("an SD Unet override (e.g. TensorRT) replaces the UNet",
                         "set Settings > Stable Diffusion > SD Unet to None and retry")
    key = getattr(getattr(sd_model, "model", None), "conditioning_key", "crossattn")
    if key not in (None, "crossattn"):
        return UserError(f"this checkpoint needs extra image conditioning ({key}: inpainting, instruct-pix2pix "
                         "or depth)", "load a plain text-to-image checkpoint")
    return None


def restore_builtin_lora(sd_model: Any) -> int:
    """Unload the builtin Lora's networks and put every layer's own weights back; returns layers restored.

    Clearing ``loaded_networks`` alone leaves the last LoRA merged; ``network_apply_weights`` with nothing
    loaded restores each layer from its CPU backup, in place (same tensors). The backup is then dropped (the
    next LoRA generation makes a fresh one), which also frees its CPU memory.
    """
    nets = lora_networks()
    if nets is None:
        return 0
    nets.loaded_networks.clear()
    apply = getattr(nets, "network_apply_weights", None)
    reset = getattr(nets, "network_reset_cached_weight", None)
    restored = 0
    with torch.no_grad():  # the WebUI restores inside generation's no_grad; UNet weights require grad
        for module in sd_model.modules():
            touched = (getattr(module, "network_current_names", ()) != ()
                       or getattr(module, "network_weights_backup", None) is not None
                       or getattr(module, "network_bias_backup", None) is not None)
            if not touched or getattr(module, "network_layer_name", None) is None:
                continue
            if apply is not None:
                apply(module)
            if reset is not None and getattr(module, "network_current_names", ()) == ():
                reset(module)
            restored += 1
    if restored:
        log.info("restored %d layers from the builtin Lora's backups before the job", restored)
    return restored


def clear_hypernetworks() -> None:
    """Hypernetworks from the last generation stay active in the attention (as the WebUI's HN trainer does)."""
    shared = m("shared")
    if getattr(shared, "loaded_hypernetworks", None):
        shared.loaded_hypernetworks = []


@contextlib.contextmanager
def detached_adapters(model: torch.nn.Module) -> Iterator[int]:
    """Detach our LoRA adapters from ``model`` for the block (a host generation must not see them), then
    re-attach them; yields how many there were."""
    from ..training.network import LoRAModule

    found = []
    for module in model.modules():
        owner = getattr(module.__dict__.get("forward"), "__self__", None)
        if isinstance(owner, LoRAModule) and owner.org is module:
            found.append(owner)
    for adapter in found:
        adapter.detach()
    try:
        yield len(found)
    finally:
        for adapter in reversed(found):
            adapter.attach()


class HostBackend(LdmBackend):
    """``LdmBackend`` over ``shared.sd_model`` after the host checks, on the host's device and dtype.

    ``device`` is ``devices.device`` (where the host computes; with --medvram the UNet may be parked on the
    CPU between forwards and the host's hooks move it), ``dtype`` that of the UNet's weights (fp16 unless
    --no-half). The training core keeps the LoRA weights in fp32 and uses autocast around them.
    """

    def __init__(self, sd_model: Any = None):
        shared = m("shared")
        sd_model = sd_model if sd_model is not None else shared.sd_model
        problem = refusal(sd_model)
        if problem is not None:
            raise problem
        restore_builtin_lora(sd_model)
        clear_hypernetworks()
        unet = _unet(sd_model)
        info = getattr(sd_model, "sd_checkpoint_info", None)
        name = getattr(info, "model_name", None) or getattr(info, "name_for_extra", None)
        super().__init__(sd_model, device=m("devices").device, dtype=next(unet.parameters()).dtype, name=name)
        self.medvram = bool(cmd_opt("medvram", False) or getattr(sd_model, "lowvram", False))
