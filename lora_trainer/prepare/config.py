"""PrepareConfig and TagConfig: the options of steps 1–3, one dataclass each.

Like ``TrainConfig`` (``lora_trainer.config``), every field carries its help text, range and choices, so
the CLI flags (``prepare``, ``tag``), the tab's controls and the API models are generated from here.
Command-line defaults follow INTERFACES.md §1: centre crop, 512 px, no background removal, white fill, no
tagger. The tab proposes the recipe's choices (a background model, the host's tagger) on top of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from ..config import opt, validate
from ..errors import UserError

CROP_MODES = ("center", "subject", "face", "focal", "manual", "none")  # focal: the WebUI's focal-point crop
# rembg 2.0.69's single-mask models (sam needs prompts, u2net_cloth_seg returns three garment masks).
BACKGROUND_MODELS = ("none", "u2net", "u2netp", "u2net_human_seg", "silueta", "isnet-general-use",
                     "isnet-anime", "birefnet-general", "birefnet-general-lite", "birefnet-portrait",
                     "birefnet-dis", "birefnet-hrsod", "birefnet-cod", "birefnet-massive", "bria-rmbg",
                     "custom")
EXISTING_POLICIES = ("skip", "overwrite", "append")
NAMED_FILLS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass
class PrepareConfig:
    """Import, crop and background removal of a folder of photos (steps 1–2)."""

    # --- crop ---
    crop: str = opt("center", "Crop mode: center square, around the subject (background mask or, without one, "
                              "the busiest region), around the largest face, the WebUI's focal point (in the WebUI), a manual box per "
                              "image, or none "
                              "(keep the aspect ratio for buckets)", group="crop", choices=CROP_MODES)
    size: int = opt(512, "Side of the square output in pixels (crop none: the longer side is capped at "
                         "max_side instead)", group="crop", min=64, max=4096)
    max_side: int = opt(1024, "Crop none: downscale so the longer side is at most this (0 = keep)",
                        group="crop", min=0, max=16384)
    max_upscale: float = opt(2.0, "Largest upscale factor applied silently; beyond it the report warns",
                             group="crop", min=1.0, max=16.0)
    subject_margin: float = opt(0.1, "Subject crop: space kept around the subject, as a fraction of its size",
                                group="crop", min=0.0, max=2.0)
    face_scale: float = opt(2.5, "Face crop: side of the square as a multiple of the face's height",
                            group="crop", min=1.0, max=10.0)
    head_room: float = opt(0.5, "Face crop: space above the face, as a fraction of the face's height",
                           group="crop", min=0.0, max=5.0)
    face_model: str = opt("", "Face crop: a YuNet face-detector ONNX file used instead of OpenCV's Haar "
                              "cascade when the file exists", group="crop")
    boxes: str = opt("", "Manual crop: JSON file mapping image names to [left, top, right, bottom] boxes",
                     group="crop")
    # --- background ---
    background: str = opt("none", "Background removal model (rembg), or none; custom = the ONNX file in "
                                  "model_path", group="background", choices=BACKGROUND_MODELS)
    model_path: str = opt("", "Background: the ONNX file of the custom model (u2net-shaped)",
                          group="background")
    fill: str = opt("white", "What replaces the background: white, black, gray, #RRGGBB, or alpha "
                             "(keep transparency)", group="background")
    alpha_matting: bool = opt(False, "Refine the mask with rembg's alpha matting (slow; for hair and fur)",
                              group="background")
    edge_erode: int = opt(0, "Shrink the model's mask by N pixels before the edge clean-up",
                          group="background", min=0, max=64)
    edge_band: int = opt(0, "Width in pixels of the edge band re-estimated from colour (0 = 2 percent of the short side, at "
                                  "least 5)",
                         group="background", min=0, max=128)
    edge_feather: float = opt(0.8, "Outward feather of the edge in pixels (0 = none)", group="background",
                              min=0.0, max=16.0)
    decontaminate: bool = opt(True, "Remove the old background's colour from edge pixels (no halo)",
                              group="background")
    save_masks: bool = opt(True, "Save <image>.mask.png beside each image (training can weight the loss "
                                 "by it)", group="background")
    # --- import ---
    max_megapixels: float = opt(150.0, "Refuse images larger than this (decompression-bomb guard)",
                                group="import", min=1.0, max=1000.0)
    near_duplicate_distance: int = opt(6, "Perceptual-hash distance (of 64 bits) under which two images "
                                          "are reported as near duplicates (-1 = off)", group="import",
                                       min=-1, max=32)
    previews: bool = opt(True, "Write before/after thumbnails to previews/ for the tab", group="import")
    workers: int = opt(0, "Images processed in parallel (0 = one per CPU core)", group="import", min=0,
                       max=64)
    # --- tagging (step 3, optional here; thresholds etc. come from TagConfig) ---
    tagger: str = opt("none", "Auto-tagger after preparing: none, toy, wd14, or a host tagger "
                              "(deepbooru, clip in the WebUI)", group="tagging")
    trigger: str = opt("", "Trigger word put first in every caption", group="tagging")


@dataclass
class TagConfig:
    """Auto-tagging of a folder of images (step 3)."""

    tagger: str = opt("none", "Tagger: toy, wd14 (the model in model_dir, else wd-vit-tagger-v3), "
                              "wd-vit-tagger-v3, wd-swinv2-tagger-v3, wd-eva02-large-tagger-v3 (fetched "
                              "with `models download`), or a host tagger (deepbooru, clip in the WebUI)",
                      group="tagging")
    threshold: float = opt(0.35, "Keep tags scored at least this", group="tagging", min=0.0, max=1.0)
    character_threshold: float = opt(0.85, "WD14: threshold for character tags", group="tagging",
                                     min=0.0, max=1.0)
    character_tags: bool = opt(True, "WD14: write character tags (those scored at least the character "
                                     "threshold)", group="tagging")
    rating_tag: bool = opt(False, "WD14: write the likeliest rating (general, sensitive, questionable, "
                                  "explicit) first, as kohya's --use_rating_tags", group="tagging")
    max_tags: int = opt(0, "Keep at most this many tags per image, best first (0 = no limit)",
                        group="tagging", min=0, max=500)
    exclude: str = opt("", "Comma-separated tags never written", group="tagging")
    trigger: str = opt("", "Trigger word put first in every caption", group="tagging")
    existing: str = opt("skip", "Images that already have a caption: skip them, overwrite (the old caption "
                                "is backed up) or append the new tags", group="tagging",
                        choices=EXISTING_POLICIES)
    underscores_to_spaces: bool = opt(True, "Write long_hair as long hair", group="tagging")
    escape_parentheses: bool = opt(True, "Write ( ) as \\( \\) (the WebUI reads (…) as emphasis)",
                                   group="tagging")
    model_dir: str = opt("", "WD14: folder with model.onnx and selected_tags.csv (default: "
                             "$LORA_TRAINER_CACHE/models/wd14, else ~/.cache/lora_trainer/models/wd14)",
                         group="tagging")
    batch_size: int = opt(8, "Images per tagger call", group="tagging", min=1, max=256)


def parse_fill(fill: str):
    """``(r, g, b)`` for a colour, or ``None`` for ``alpha``; UserError for anything else."""
    f = fill.strip().lower()
    if f == "alpha":
        return None
    if f in NAMED_FILLS:
        return NAMED_FILLS[f]
    m = _HEX.match(f)
    if not m:
        raise UserError(f"fill: {fill!r} is not a colour", "use white, black, gray, alpha or #RRGGBB")
    h = m.group(1)
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


def check_prepare(cfg: PrepareConfig) -> PrepareConfig:
    """Ranges and choices (as every config) plus what a choice list cannot say."""
    validate(cfg)
    parse_fill(cfg.fill)
    if cfg.background == "custom" and not cfg.model_path:
        raise UserError("background custom needs model_path", "give --model-path FILE.onnx")
    if cfg.crop == "manual" and not cfg.boxes:
        raise UserError("crop manual needs a boxes file", "give --boxes FILE.json mapping names to boxes")
    from .crop import HOST_CROP_MODES

    if cfg.crop == "focal" and "focal" not in HOST_CROP_MODES:
        raise UserError("the focal-point crop is the WebUI's own and is only offered inside the WebUI",
                        "choose subject (the busiest region without a mask) or center")
    return cfg


def split_options(data: dict) -> tuple[dict, dict]:
    """A config file's keys split between PrepareConfig and TagConfig (``[prepare]``/``[tag]`` tables or
    flat keys); unknown keys are left in both so ``from_dict`` names them with a suggestion."""
    if isinstance(data.get("prepare"), dict) or isinstance(data.get("tag"), dict):
        return dict(data.get("prepare") or {}), dict(data.get("tag") or {})
    prep_names = {f.name for f in fields(PrepareConfig)}
    tag_names = {f.name for f in fields(TagConfig)}
    prep, tag = {}, {}
    for k, v in data.items():
        key = k.replace("-", "_")
        if key == "version":
            continue
        if key in prep_names:
            prep[key] = v
        if key in tag_names:
            tag[key] = v
        if key not in prep_names and key not in tag_names:
            prep[key] = v
    return prep, tag
