"""Module names across the three worlds a LoRA file meets: kohya, diffusers and ldm (the WebUI's model).

kohya's canonical LoRA names are the diffusers module paths with ``.`` replaced by ``_`` and a prefix
(``lora_unet_down_blocks_0_attentions_0_proj_in``, ``lora_te_text_model_encoder_layers_0_self_attn_q_proj``).
A file trained on the WebUI's ldm model must carry exactly those names, so ldm paths are converted here and
nowhere else. Everything is a pure function on strings; no torch import.

ldm layout (``openaimodel.UNetModel``), with ``L = num_res_blocks`` and ``n = num_levels = len(channel_mult)``:

* ``input_blocks.0.0`` is ``conv_in``; then per level ``i`` come ``L`` blocks ``[ResBlock, SpatialTransformer?]``
  at ``input_blocks.{(L+1)i+j+1}`` and, except on the deepest level, a ``Downsample`` at
  ``input_blocks.{(L+1)(i+1)}.0`` (its conv is ``op``);
* ``middle_block.{0,1,2}`` = resnet, transformer, resnet;
* ``output_blocks`` start at the DEEPEST level, as diffusers' ``up_blocks`` do: up block ``i`` (level
  ``n-1-i``) has ``L+1`` blocks at ``output_blocks.{(L+1)i+j}``; the last of them also holds the ``Upsample``
  (``.conv``) after the resnet and the transformer if that level has one. Up block ``n-1`` has no upsampler.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

UNET_PREFIX = "lora_unet"
TE_PREFIX = "lora_te"

# ldm ResBlock inner paths <-> diffusers ResnetBlock2D inner paths.
_RESNET_LDM_TO_DIFFUSERS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_RESNET_DIFFUSERS_TO_LDM = {v: k for k, v in _RESNET_LDM_TO_DIFFUSERS.items()}

# Top-level modules outside the blocks (ldm <-> diffusers).
_TOP_LDM_TO_DIFFUSERS = {
    "input_blocks.0.0": "conv_in",
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
_TOP_DIFFUSERS_TO_LDM = {v: k for k, v in _TOP_LDM_TO_DIFFUSERS.items()}


def to_kohya(prefix: str, module_path: str) -> str:
    """kohya's name for a module: ``prefix`` + ``_`` + the (diffusers-style) path with dots as underscores."""
    return f"{prefix}_{module_path.replace('.', '_')}"


def te_module_path(path: str) -> str:
    """The CLIP text-encoder path kohya names are made from: always under ``text_model.``.

    transformers >= 5.6 flattens ``CLIPTextModel`` (``encoder.layers.0…``); 4.x and every original-format file
    keep ``text_model.encoder.layers.0…``. Both must give ``lora_te_text_model_encoder_layers_0_…``.
    """
    if path == "text_model" or path.startswith("text_model."):
        return path
    return f"text_model.{path}" if path else "text_model"


def _split(path: str, head: str) -> Optional[str]:
    """``rest`` when ``path`` is ``head`` or ``head.rest`` ("" for ``head`` itself), else None."""
    if path == head:
        return ""
    if path.startswith(head + "."):
        return path[len(head) + 1:]
    return None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _map_inner(rest: str, table: dict) -> Optional[str]:
    """Rename the leading module of ``rest`` through ``table`` (keeping what follows, e.g. ``.weight``).

    An empty ``rest`` (the block itself) stays empty; an unknown inner module gives None.
    """
    if not rest:
        return ""
    for src, dst in table.items():
        tail = _split(rest, src)
        if tail is not None:
            return _join(dst, tail)
    return None


def _parse_block(path: str, container: str) -> Optional[tuple]:
    """``container.N.P.rest`` -> (N, P, rest); None when ``path`` is not of that form."""
    m = re.match(rf"^{re.escape(container)}\.(\d+)\.(\d+)(?:\.(.+))?$", path)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), m.group(3) or ""


def _check_layout(num_res_blocks: int, num_levels: int) -> None:
    if not isinstance(num_res_blocks, int) or num_res_blocks < 1 or num_levels < 1:
        raise ValueError(f"unsupported UNet layout: num_res_blocks={num_res_blocks!r}, num_levels={num_levels!r}"
                         " (one int of res blocks for every level is what SD1/SD2 use)")


def ldm_to_diffusers_unet(path: str, num_res_blocks: int, num_levels: int) -> Optional[str]:
    """The diffusers path of an ldm UNet module path (relative to ``diffusion_model``), or None.

    A trailing parameter part (``.weight``) is carried over, so whole state-dict keys convert too.
    """
    _check_layout(num_res_blocks, num_levels)
    per = num_res_blocks + 1
    for src, dst in _TOP_LDM_TO_DIFFUSERS.items():
        tail = _split(path, src)
        if tail is not None:
            return _join(dst, tail)

    parsed = _parse_block(path, "input_blocks")
    if parsed:
        n, pos, rest = parsed
        if n == 0:
            return None
        i, j = divmod(n - 1, per)
        if i >= num_levels:
            return None
        if j < num_res_blocks:
            if pos == 0:
                inner = _map_inner(rest, _RESNET_LDM_TO_DIFFUSERS)
                return _join(f"down_blocks.{i}.resnets.{j}", inner) if inner is not None else None
            if pos == 1:
                return _join(f"down_blocks.{i}.attentions.{j}", rest)
            return None
        tail = _split(rest, "op")
        if pos == 0 and tail is not None and i < num_levels - 1:
            return _join(f"down_blocks.{i}.downsamplers.0.conv", tail)
        return None

    m = re.match(r"^middle_block\.(\d+)(?:\.(.+))?$", path)
    if m:
        pos, rest = int(m.group(1)), m.group(2) or ""
        if pos in (0, 2):
            inner = _map_inner(rest, _RESNET_LDM_TO_DIFFUSERS)
            return _join(f"mid_block.resnets.{pos // 2}", inner) if inner is not None else None
        if pos == 1:
            return _join("mid_block.attentions.0", rest)
        return None

    parsed = _parse_block(path, "output_blocks")
    if parsed:
        n, pos, rest = parsed
        i, j = divmod(n, per)
        if i >= num_levels:
            return None
        conv_tail = _split(rest, "conv")
        if pos > 0 and conv_tail is not None:
            # Upsample: only in the last block of an up block that is not the shallowest level.
            if j == num_res_blocks and i < num_levels - 1:
                return _join(f"up_blocks.{i}.upsamplers.0.conv", conv_tail)
            return None
        if pos == 0:
            inner = _map_inner(rest, _RESNET_LDM_TO_DIFFUSERS)
            return _join(f"up_blocks.{i}.resnets.{j}", inner) if inner is not None else None
        if pos == 1:
            return _join(f"up_blocks.{i}.attentions.{j}", rest)
        return None
    return None


def diffusers_to_ldm_unet(path: str, num_res_blocks: int, num_levels: int,
                          attention_levels: Optional[Iterable[int]] = None) -> Optional[str]:
    """The ldm path of a diffusers UNet module path, or None.

    ``attention_levels``: the levels (0 = shallowest, as ``down_blocks`` count) whose blocks hold a
    transformer. Only the upsampler's position depends on it (``output_blocks.K.2.conv`` after a transformer,
    ``.1.conv`` without one). Default: every level but the deepest, which is the SD1/SD2 layout.
    """
    _check_layout(num_res_blocks, num_levels)
    per = num_res_blocks + 1
    attn = set(range(num_levels - 1)) if attention_levels is None else set(attention_levels)
    for src, dst in _TOP_DIFFUSERS_TO_LDM.items():
        tail = _split(path, src)
        if tail is not None:
            return _join(dst, tail)

    m = re.match(r"^down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)(?:\.(.+))?$", path)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4) or ""
        if i >= num_levels:
            return None
        if kind == "downsamplers":
            tail = _split(rest, "conv")
            if j != 0 or tail is None or i >= num_levels - 1:
                return None
            return _join(f"input_blocks.{per * (i + 1)}.0.op", tail)
        if j >= num_res_blocks:
            return None
        block = per * i + j + 1
        if kind == "resnets":
            inner = _map_inner(rest, _RESNET_DIFFUSERS_TO_LDM)
            return _join(f"input_blocks.{block}.0", inner) if inner is not None else None
        return _join(f"input_blocks.{block}.1", rest)

    m = re.match(r"^mid_block\.(resnets|attentions)\.(\d+)(?:\.(.+))?$", path)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        if kind == "attentions":
            return _join("middle_block.1", rest) if j == 0 else None
        if j > 1:
            return None
        inner = _map_inner(rest, _RESNET_DIFFUSERS_TO_LDM)
        return _join(f"middle_block.{2 * j}", inner) if inner is not None else None

    m = re.match(r"^up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)(?:\.(.+))?$", path)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4) or ""
        if i >= num_levels:
            return None
        if kind == "upsamplers":
            tail = _split(rest, "conv")
            if j != 0 or tail is None or i >= num_levels - 1:
                return None
            level = num_levels - 1 - i  # up blocks count from the deepest level
            pos = 2 if level in attn else 1
            return _join(f"output_blocks.{per * i + num_res_blocks}.{pos}.conv", tail)
        if j > num_res_blocks:
            return None
        if kind == "resnets":
            inner = _map_inner(rest, _RESNET_DIFFUSERS_TO_LDM)
            return _join(f"output_blocks.{per * i + j}.0", inner) if inner is not None else None
        return _join(f"output_blocks.{per * i + j}.1", rest)
    return None


# --- what the WebUI's builtin Lora extension does with a kohya name (WEBUI_API.md §6.2) -----------------------
# Its converter assumes the SD1/SD2 layout (2 res blocks per level: 3 ldm blocks per diffusers block) whatever
# the model is; we reproduce that on purpose, because a file must load in the WebUI as the WebUI really is.
_WEBUI_RESNET = {"conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0", "norm2": "out_layers_0",
                 "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"}
_WEBUI_SD2_TE = (("mlp_fc1", "mlp_c_fc"), ("mlp_fc2", "mlp_c_proj"), ("self_attn", "attn"))


def _webui_inner(kind: str, rest: str) -> str:
    return _WEBUI_RESNET.get(rest, rest) if kind == "resnets" else rest


def _webui_sd2_te(rest: str) -> str:
    for src, dst in _WEBUI_SD2_TE:
        if src in rest:
            return rest.replace(src, dst)
    return rest


def webui_compvis_name(kohya_name: str, is_sd2: bool = False) -> Optional[str]:
    """The WebUI ``network_layer_name`` a kohya module prefix is converted to, or None when no rule applies.

    Rules as documented in WEBUI_API.md §6.2: diffusers-style UNet names become
    ``diffusion_model_input_blocks_{1+3i+j}_{0|1}_…`` etc. (fixed factor 3), resnet suffixes are renamed, SD1 text
    encoder names gain ``transformer_``, SD2's become open_clip ``model_transformer_resblocks_…`` names.
    (For None the WebUI keeps the key and then tries its compvis fallback ``lora_unet`` -> ``diffusion_model``.)
    """
    k = kohya_name
    m = re.match(r"^lora_unet_conv_in(.*)$", k)
    if m:
        return f"diffusion_model_input_blocks_0_0{m.group(1)}"
    m = re.match(r"^lora_unet_conv_out(.*)$", k)
    if m:
        return f"diffusion_model_out_2{m.group(1)}"
    m = re.match(r"^lora_unet_time_embedding_linear_(\d+)(.*)$", k)
    if m:
        return f"diffusion_model_time_embed_{int(m.group(1)) * 2 - 2}{m.group(2)}"
    m = re.match(r"^lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$", k)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        pos = 1 if kind == "attentions" else 0
        return f"diffusion_model_input_blocks_{1 + 3 * i + j}_{pos}_{_webui_inner(kind, rest)}"
    m = re.match(r"^lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)$", k)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        pos = 1 if kind == "attentions" else 2 * j
        return f"diffusion_model_middle_block_{pos}_{_webui_inner(kind, rest)}"
    m = re.match(r"^lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$", k)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        pos = 1 if kind == "attentions" else 0
        return f"diffusion_model_output_blocks_{3 * i + j}_{pos}_{_webui_inner(kind, rest)}"
    m = re.match(r"^lora_unet_down_blocks_(\d+)_downsamplers_0_conv", k)
    if m:
        return f"diffusion_model_input_blocks_{3 + 3 * int(m.group(1))}_0_op"
    m = re.match(r"^lora_unet_up_blocks_(\d+)_upsamplers_0_conv", k)
    if m:
        i = int(m.group(1))
        return f"diffusion_model_output_blocks_{2 + 3 * i}_{2 if i > 0 else 1}_conv"
    m = re.match(r"^lora_te_text_model_encoder_layers_(\d+)_(.+)$", k)
    if m:
        n, rest = m.group(1), m.group(2)
        if is_sd2:
            return f"model_transformer_resblocks_{n}_{_webui_sd2_te(rest)}"
        return f"transformer_text_model_encoder_layers_{n}_{rest}"
    m = re.match(r"^lora_te2_text_model_encoder_layers_(\d+)_(.+)$", k)
    if m:
        return f"1_model_transformer_resblocks_{m.group(1)}_{_webui_sd2_te(m.group(2))}"
    return None
