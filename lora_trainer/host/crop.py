"""The WebUI's focal-point crop (``modules/textual_inversion/autocrop.py``, 1.6-1.10) as a crop mode.

It weighs faces, entropy and corners. Its face detector is YuNet when the WebUI has already downloaded the
model and OpenCV's bundled Haar cascade otherwise: we never call ``download_and_cache_models`` (it fetches
from GitHub and hangs offline).
"""

from __future__ import annotations

import os
from typing import Optional

from PIL import Image

from .env import m, models_path

DEFAULT_WEIGHTS = {"face": 0.9, "entropy": 0.15, "edges": 0.5}  # the WebUI's "Auto focal point crop" defaults


def face_model_path() -> Optional[str]:
    """YuNet's file if the WebUI has it: 1.7+ name it in ``autocrop.model_file_path`` (matched to the
    OpenCV version); 1.6 kept ``models/opencv/face_detection_yunet.onnx``."""
    autocrop = m("textual_inversion.autocrop")
    path = getattr(autocrop, "model_file_path", None) or str(models_path() / "opencv" / "face_detection_yunet.onnx")
    return path if os.path.isfile(path) else None


def _settings(width: int, height: int, weights: Optional[dict]):
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    return m("textual_inversion.autocrop").Settings(
        crop_width=width, crop_height=height, face_points_weight=w["face"], entropy_points_weight=w["entropy"],
        corner_points_weight=w["edges"], annotate_image=False, dnn_model_path=face_model_path())


def host_focal_crop(image: Image.Image, size: int, weights: Optional[dict] = None) -> Image.Image:
    """A ``size``×``size`` crop around the WebUI's focal point (scaled so the short side is ``size``)."""
    autocrop = m("textual_inversion.autocrop")
    out = autocrop.crop_image(image.convert("RGB"), _settings(size, size, weights))[0]
    return out if out.size == (size, size) else out.resize((size, size), Image.LANCZOS)


def host_focal_box(image: Image.Image, weights: Optional[dict] = None,
                   work_side: int = 512) -> tuple[int, int, int, int]:
    """The largest square around the WebUI's focal point, in ``image``'s pixels (left, top, right, bottom).

    For pipelines that crop by box (``prepare/``): the focal point is found on a copy whose short side is
    ``work_side`` (as the crop itself would), then the square is placed as ``crop_image`` places it.
    """
    w, h = image.size
    scale = min(1.0, work_side / min(w, h))
    work = image.convert("RGB").resize((max(1, round(w * scale)), max(1, round(h * scale))))
    side = min(work.size)
    poi = m("textual_inversion.autocrop").focal_point(work, _settings(side, side, weights))
    cx, cy, full = poi.x / scale, poi.y / scale, min(w, h)
    left = int(min(max(round(cx - full / 2), 0), w - full))
    top = int(min(max(round(cy - full / 2), 0), h - full))
    return left, top, left + full, top + full
