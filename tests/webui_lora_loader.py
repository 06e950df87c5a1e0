"""A LoRA loader that does what the WebUI's builtin Lora extension does with a kohya file (WEBUI_API.md §6.2).

Written from the documented behaviour, to test that files we save load into an ldm model the way the WebUI
loads them: module names as ``assign_network_names_to_compvis_modules`` gives them, each key split at its first
``.``, the prefix converted with ``webui_compvis_name`` (then the documented fallbacks), and
``up @ down * alpha/dim * multiplier`` merged into the weight. It always works on a deep copy: a shared test
fixture is never changed.
"""

from __future__ import annotations

import copy
import re
from typing import Optional

import torch
from torch import nn

from lora_trainer.training.names import te_module_path, webui_compvis_name

_X_PROJ = re.compile(r"(.*)_([qkv]_proj)$")


def webui_layer_mapping(sd_model: nn.Module) -> dict[str, nn.Module]:
    """``network_layer_name -> module`` as the WebUI builds it for SD1/SD2.

    Text encoder: ``cond_stage_model.wrapped.named_modules()``; UNet: ``sd_model.model.named_modules()``; dots
    become underscores. One addition: a transformers >= 5.6 ``CLIPTextModel`` has no ``text_model.`` level;
    the WebUI runs transformers 4.30 where it has one, so it is put back for the names to be the WebUI's.
    """
    mapping: dict[str, nn.Module] = {}
    csm = sd_model.cond_stage_model
    wrapped = getattr(csm, "wrapped", csm)
    transformer = getattr(wrapped, "transformer", None)
    flattened = isinstance(transformer, nn.Module) and not hasattr(transformer, "text_model")
    for name, module in wrapped.named_modules():
        if flattened and (name == "transformer" or name.startswith("transformer.")):
            inner = name[len("transformer."):] if name != "transformer" else ""
            name = "transformer." + te_module_path(inner) if inner else name
        mapping[name.replace(".", "_")] = module
    for name, module in sd_model.model.named_modules():
        mapping[name.replace(".", "_")] = module
    return mapping


def _find(prefix: str, mapping: dict[str, nn.Module], is_sd2: bool) -> tuple[Optional[str], Optional[nn.Module]]:
    """The WebUI's lookup order: converted name, then without ``_[qkv]_proj``, then the compvis fallbacks."""
    key = webui_compvis_name(prefix, is_sd2) or prefix
    module = mapping.get(key)
    if module is None:
        m = _X_PROJ.match(key)
        if m:
            module = mapping.get(m.group(1))
    if module is None and "lora_unet" in prefix:
        key = prefix.replace("lora_unet", "diffusion_model")
        module = mapping.get(key)
    elif module is None and "lora_te1_text_model" in prefix:
        key = prefix.replace("lora_te1_text_model", "0_transformer_text_model")
        module = mapping.get(key)
        if module is None:
            key = prefix.replace("lora_te1_text_model", "transformer_text_model")
            module = mapping.get(key)
    return (key, module) if module is not None else (None, None)


def lora_delta(up: torch.Tensor, down: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
    """``up @ down`` in the weight's shape: Linear, 1x1 conv, and kxk conv (down r×in×k×k, up out×r×1×1)."""
    out_shape = [up.shape[0], down.shape[1], *down.shape[2:]]
    updown = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(out_shape)
    return updown.reshape(weight_shape)


def load_kohya_lora(sd_model: nn.Module, path, multiplier: float = 1.0, te_multiplier: Optional[float] = None,
                    unet_multiplier: Optional[float] = None) -> tuple[nn.Module, int, list[str]]:
    """Merge the kohya LoRA file at ``path`` into a deep copy of ``sd_model``.

    Returns ``(model_copy, matched_count, unmatched_keys)``: ``matched_count`` counts modules changed (the
    WebUI's ``len(net.modules)``), ``unmatched_keys`` the file keys no module was found for (which the WebUI
    only logs at debug level: a file with wrong names silently does nothing).
    """
    from safetensors.torch import load_file

    te_mult = multiplier if te_multiplier is None else te_multiplier
    unet_mult = multiplier if unet_multiplier is None else unet_multiplier
    state = load_file(str(path))
    model = copy.deepcopy(sd_model)
    mapping = webui_layer_mapping(model)
    is_sd2 = "model_transformer_resblocks" in mapping

    groups: dict[str, tuple[nn.Module, dict[str, torch.Tensor]]] = {}
    unmatched: list[str] = []
    for key, tensor in state.items():
        prefix, _, part = key.partition(".")
        sd_key, module = _find(prefix, mapping, is_sd2)
        if module is None:
            unmatched.append(key)
            continue
        groups.setdefault(sd_key, (module, {}))[1][part] = tensor

    with torch.no_grad():
        for sd_key, (module, w) in groups.items():
            if "lora_up.weight" in w and "lora_down.weight" in w:
                up, down = w["lora_up.weight"], w["lora_down.weight"]
            elif "lora_B.weight" in w and "lora_A.weight" in w:
                up, down = w["lora_B.weight"], w["lora_A.weight"]
            else:
                raise AssertionError(f"{sd_key}: no LoRA up/down pair in {sorted(w)}")
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                raise AssertionError(f"{sd_key}: LoRA on unsupported {type(module).__name__}")
            dim = down.shape[0]
            scale = float(w["alpha"]) / dim if "alpha" in w else 1.0
            mult = te_mult if "transformer" in sd_key[:20] else unet_mult
            delta = lora_delta(up.float(), down.float(), module.weight.shape) * scale * mult
            module.weight.add_(delta.to(module.weight.device, module.weight.dtype))
    return model, len(groups), unmatched
