"""Is this model file usable? Pure checks of a base model or a LoRA, before anything is loaded.

A truncated download, an HTML error page saved as ``.safetensors`` or a LoRA given as the base model used
to surface after seconds of loading as a traceback (``MemoryError:`` with no message, an index overflow, or
"not a Stable Diffusion checkpoint" for a half-copied one). These functions read only the file's header
(the first 8 bytes give the JSON header's length; the header gives each tensor's dtype, shape and byte
range) and the folder's layout, so every face can refuse a bad file at once with one ``UserError`` that
names the file and says what to do. Stdlib only: no torch, no safetensors, no diffusers (the WebUI 1.10
profile has none), so the CLI answers in well under a second.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from .errors import UserError

PathLike = Union[str, Path]

# Bits per element of every dtype the safetensors format names (sub-byte floats pack several per byte).
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
              "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

# Original-format (ldm) checkpoint keys that tell the families apart (the WebUI tells them the same way).
TE_SD1_KEY = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
TE_SD2_KEY = "cond_stage_model.model.positional_embedding"
UNET_ATTN2_K = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
SDXL_KEY = "conditioner.embedders.1.model.ln_final.weight"
LORA_PREFIXES = ("lora_unet_", "lora_te", "lycoris_")
# The parts a diffusers SD folder must have, and the files each one needs.
DIFFUSERS_PARTS = {"unet": ("config.json",), "vae": ("config.json",), "text_encoder": ("config.json",),
                   "tokenizer": ("vocab.json", "merges.txt"), "scheduler": ("scheduler_config.json",)}
WEIGHT_PARTS = ("unet", "vae", "text_encoder")

CONVERT_HINT = ("convert it to .safetensors first (e.g. in a trusted environment with torch>=2.6: "
                "torch.load(path, weights_only=True) then safetensors.torch.save_file); "
                "weights_only is not safe on torch < 2.6 (CVE-2025-32434)")


@dataclass
class SafetensorsHeader:
    """What a ``.safetensors`` file's header says: ``shapes`` name -> shape, the ``__metadata__``."""

    path: Path
    shapes: dict
    metadata: dict


def _mb(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


def _what_else(head: bytes) -> str:
    """A guess at what a file that is not safetensors is, from its first bytes ("" when unknown)."""
    low = head[:512].lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "a web page, not model weights (a failed or blocked download?)"
    if low.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights (run git lfs pull, or download the file itself)"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "a pickle checkpoint (torch.save) under a .safetensors name, which LoRA Trainer does not load"
    if low.startswith((b"{", b"[")):
        return "a JSON file, not model weights"
    return ""


def read_header(path: PathLike, flag: str = "--base-model") -> SafetensorsHeader:
    """Check that ``path`` is a whole, well-formed ``.safetensors`` file; its tensors' shapes and metadata.

    Checked: the header length fits the file, the header is a JSON object, every tensor has a known dtype,
    a shape, and a byte range of exactly its size, and the ranges cover the data with no gap, overlap or
    missing tail (the checks the safetensors library makes, but as messages a user can act on).
    """
    path = Path(path)
    shown = f"{flag} {path}"
    if not path.exists():
        raise UserError(f"{shown}: no such file", "check the path")
    if path.is_dir():
        raise UserError(f"{shown} is a folder, not a .safetensors file", "give the .safetensors file itself")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{shown} is empty (0 bytes)", "copy or download the file again")
    with path.open("rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        json_ok = 2 <= n <= MAX_HEADER
        if json_ok and n <= size - 8:
            raw = fh.read(n)
        else:
            raw = fh.read(min(512, max(0, size - 8)))
    if n < 0:
        raise UserError(f"{shown} is not a .safetensors file ({size} bytes)", "copy or download the file again")
    if not json_ok or (n > size - 8 and not raw.lstrip().startswith(b"{")):
        other = _what_else(head + raw)
        raise UserError(f"{shown} is {other}" if other else
                        f"{shown} is not a .safetensors file (its first 8 bytes give no header length that fits "
                        f"the file's {_mb(size)})", "give a .safetensors file; copy or download it again")
    if n > size - 8:
        raise UserError(f"{shown} is truncated: {_mb(size)}, cut off inside its {_mb(n)} header",
                        "copy or download the file again")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"{shown} is corrupt: its header is not valid JSON", "copy or download the file again") \
            from None
    if not isinstance(header, dict):
        raise UserError(f"{shown} is corrupt: its header is not a JSON object", "copy or download the file again")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    shapes, ranges = {}, []
    for name, t in header.items():
        bad = _tensor_problem(t)
        if bad:
            raise UserError(f"{shown} is corrupt: tensor {name!r} {bad}", "copy or download the file again")
        begin, end = t["data_offsets"]
        count = math.prod(t["shape"])
        if end - begin != math.ceil(count * DTYPE_BITS[t["dtype"]] / 8):
            raise UserError(f"{shown} is corrupt: tensor {name!r} has {end - begin} bytes for shape {t['shape']} "
                            f"of {t['dtype']}", "copy or download the file again")
        shapes[name] = t["shape"]
        ranges.append((begin, end, name))
    at = 0
    for begin, end, name in sorted(ranges):
        if begin != at:
            raise UserError(f"{shown} is corrupt: tensor {name!r} starts at byte {begin} of the data, not {at} "
                            f"(gap or overlap)", "copy or download the file again")
        at = end
    if at > data_size:
        raise UserError(f"{shown} is truncated: {_mb(size)} of {_mb(8 + n + at)}",
                        "copy or download the file again")
    if at < data_size:
        raise UserError(f"{shown} is corrupt: {data_size - at} bytes follow its last tensor",
                        "copy or download the file again")
    return SafetensorsHeader(path, shapes, metadata if isinstance(metadata, dict) else {})


def _tensor_problem(t) -> str:
    if not isinstance(t, dict):
        return "is not a tensor entry"
    dtype, shape, offsets = t.get("dtype"), t.get("shape"), t.get("data_offsets")
    if dtype not in DTYPE_BITS:
        return f"has an unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"has a bad shape {shape!r}"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        return f"has bad data offsets {offsets!r}"
    return ""


def detect_family(keys: dict, shown: str = "this file") -> str:
    """``sd1`` / ``sd2`` from an original-format checkpoint's key names and shapes (``keys``: name -> shape)."""
    if SDXL_KEY in keys or any(k.startswith("conditioner.") for k in keys):
        raise UserError(f"{shown}: SDXL checkpoints are not supported yet", "use an SD1.x or SD2.x checkpoint")
    if TE_SD2_KEY in keys or (UNET_ATTN2_K in keys and tuple(keys[UNET_ATTN2_K])[-1] == 1024):
        return "sd2"
    if TE_SD1_KEY in keys or UNET_ATTN2_K in keys:
        return "sd1"
    if is_lora(keys):
        raise UserError(f"{shown} is a LoRA, not a base model",
                        "give --base-model a full SD checkpoint or a diffusers folder, and the LoRA to --lora")
    raise UserError(f"{shown} is not a Stable Diffusion 1.x/2.x checkpoint (no UNet/text-encoder keys found)",
                    "give --base-model a full SD checkpoint or a diffusers folder")


def is_lora(keys) -> bool:
    return any(k.startswith(LORA_PREFIXES) for k in keys)


def refuse_pickle(path: PathLike, flag: str = "--base-model") -> None:
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UserError(f"{flag} {path} is a pickle checkpoint, which LoRA Trainer does not load", CONVERT_HINT)


def check_base_model(path: PathLike, flag: str = "--base-model") -> str:
    """``diffusers`` for a complete diffusers folder, the family (``sd1``/``sd2``) of a whole SD single-file
    checkpoint, ``remote`` for a hub id or URL (not fetched here); a one-line UserError naming the file otherwise."""
    from .model_store import is_remote_base

    if isinstance(path, str) and is_remote_base(path):
        return "remote"  # a hub id or URL: checked once the store has it (models.load_backend)
    path = Path(path)
    refuse_pickle(path, flag)
    if not path.exists():
        raise UserError(f"{flag} {path}: model not found", "give a diffusers folder or a .safetensors file")
    if path.is_dir():
        check_diffusers_folder(path, flag)
        return "diffusers"
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{flag} {path}: unknown model format", "use a .safetensors checkpoint or a diffusers folder")
    return detect_family(read_header(path, flag).shapes, f"{flag} {path}")


def check_diffusers_folder(path: Path, flag: str = "--base-model") -> None:
    shown = f"{flag} {path}"
    index = path / "model_index.json"
    if not index.is_file():
        raise UserError(f"{shown} is not a diffusers model folder (no model_index.json)",
                        "give the folder that holds unet/, vae/, text_encoder/, tokenizer/, scheduler/")
    try:
        json.loads(index.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"{shown}: model_index.json is not valid JSON", "copy the model folder again") from None
    for part, files in DIFFUSERS_PARTS.items():
        fast_tokenizer = part == "tokenizer" and (path / part / "tokenizer.json").is_file()
        for f in files:
            if not (path / part / f).is_file() and not fast_tokenizer:
                raise UserError(f"{shown} is incomplete: {part}/{f} is missing", "copy the model folder again")
    for part in WEIGHT_PARTS:
        weights = sorted((path / part).glob("*.safetensors"))
        if not weights:
            pickles = [p.name for p in (path / part).iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
            if pickles:
                raise UserError(f"{shown}: {part}/{pickles[0]} is pickle weights, which LoRA Trainer does not load",
                                "save the folder again with safetensors (save_pretrained(safe_serialization=True))")
            raise UserError(f"{shown} is incomplete: no {part}/*.safetensors weights", "copy the model folder again")
        for w in weights:
            read_header(w, flag)


def check_lora(path: PathLike, flag: str = "--lora") -> SafetensorsHeader:
    """A whole ``.safetensors`` file with kohya/LyCORIS LoRA keys; a one-line UserError naming it otherwise."""
    path = Path(path)
    refuse_pickle(path, flag)
    info = read_header(path, flag)
    if not is_lora(info.shapes):
        shown = f"{flag} {path}"
        if TE_SD1_KEY in info.shapes or UNET_ATTN2_K in info.shapes or TE_SD2_KEY in info.shapes:
            raise UserError(f"{shown} is a base model, not a LoRA", "give it to --base-model, and a LoRA to --lora")
        raise UserError(f"{shown} has no LoRA weights (no lora_unet_…/lora_te_… keys)",
                        "give a kohya-format LoRA .safetensors (what LoRA Trainer and kohya's scripts write)")
    return info


def check_model_args(args) -> None:
    """The CLI's gate: the files ``--base-model`` and ``--lora`` name, checked before any command loads a model."""
    if getattr(args, "base_model", None):
        check_base_model(args.base_model)
    if getattr(args, "lora", None):
        check_lora(args.lora)
