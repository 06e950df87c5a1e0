"""Step 2a, crop: where the square goes (centre, subject, face, manual) and how it is resized.

Boxes are ``(left, top, right, bottom)`` in pixels of the oriented original, so a box computed on a
reduced decode (JPEG draft) or a mask scales back exactly. Every function here is pure except the face
detector, which uses OpenCV's bundled Haar cascade (``cv2.data``; nothing is downloaded) or, when the user
has its model file, OpenCV's YuNet DNN detector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import UserError

Box = tuple[int, int, int, int]


def square_at(w: int, h: int, cx: float, cy: float, side: float) -> Box:
    """A square of ``side`` centred on (cx, cy), shrunk to fit and slid inside the image."""
    side = int(round(min(side, w, h)))
    left = int(round(cx - side / 2))
    top = int(round(cy - side / 2))
    left = min(max(left, 0), w - side)
    top = min(max(top, 0), h - side)
    return left, top, left + side, top + side


def center_box(w: int, h: int) -> Box:
    return square_at(w, h, w / 2, h / 2, min(w, h))


def subject_box(mask: np.ndarray, w: int, h: int, margin: float, min_side: float) -> Optional[Box]:
    """The square around the mask's subject (its bounding box plus ``margin``), or None for an empty mask.

    ``mask`` may be smaller than the image (it is scaled); the square is never smaller than ``min_side``
    (so a small subject is not blown up beyond what the output needs).
    """
    ys, xs = np.nonzero(mask >= 0.5)
    if len(xs) < 16:
        return None
    sx, sy = w / mask.shape[1], h / mask.shape[0]
    x0, x1 = xs.min() * sx, (xs.max() + 1) * sx
    y0, y1 = ys.min() * sy, (ys.max() + 1) * sy
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    return square_at(w, h, (x0 + x1) / 2, (y0 + y1) / 2, max(side, min_side))


def focal_box(gray: np.ndarray, w: int, h: int) -> Box:
    """Without a mask: the full-height (or -width) square holding the most edge energy.

    Edges stand in for "where the subject is": a person in front of a wall or sky is where the detail is.
    ``gray`` is a small float image of the whole frame (any scale).
    """
    import cv2

    g = gray.astype(np.float32)
    mag = np.abs(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)) + np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    gh, gw = g.shape
    if w >= h:
        profile, win, scale = mag.sum(axis=0), max(1, int(round(gw * h / w))), w / gw
    else:
        profile, win, scale = mag.sum(axis=1), max(1, int(round(gh * w / h))), h / gh
    csum = np.concatenate([[0.0], np.cumsum(profile)])
    sums = csum[win:] - csum[:-win]
    # ties (a flat image) resolve to the centre rather than the first window
    best = np.flatnonzero(sums >= sums.max() - 1e-6)
    start = best[np.argmin(np.abs(best - (len(sums) - 1) / 2))]
    centre = (start + win / 2) * scale
    return square_at(w, h, centre if w >= h else w / 2, centre if h > w else h / 2, min(w, h))


def detect_faces(rgb: Image.Image, model: str = "") -> list[tuple[int, int, int, int]]:
    """Faces as ``(x, y, w, h)`` in pixels of ``rgb``, largest first.

    YuNet (``cv2.FaceDetectorYN``) when ``model`` names an existing ONNX file, else the Haar frontal-face
    cascade that ships inside OpenCV. Detection runs on a copy at most 1024 px long.
    """
    import cv2

    k = min(1.0, 1024 / max(rgb.size))
    small = rgb.resize((max(1, round(rgb.width * k)), max(1, round(rgb.height * k))), Image.BILINEAR) \
        if k < 1 else rgb
    arr = np.asarray(small)
    faces: list[tuple[float, float, float, float]] = []
    if model and Path(model).is_file() and hasattr(cv2, "FaceDetectorYN"):
        det = cv2.FaceDetectorYN.create(model, "", (small.width, small.height), 0.8)
        _, found = det.detect(np.ascontiguousarray(arr[:, :, ::-1]))
        faces = [tuple(map(float, f[:4])) for f in (found if found is not None else [])]
    else:
        cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
        if cascade.empty():
            raise UserError("OpenCV's Haar face cascade could not be loaded", "reinstall opencv-python(-headless)")
        gray = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)  # no histogram equalisation: flat borders skew it
        min_size = max(24, int(0.05 * min(gray.shape)))
        found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
        faces = [tuple(map(float, f)) for f in found]
    faces.sort(key=lambda f: f[2] * f[3], reverse=True)
    return [tuple(int(round(v / k)) for v in f) for f in faces]


def face_box(face: Sequence[int], w: int, h: int, scale: float, head_room: float, min_side: float) -> Box:
    """A portrait square around ``face`` (x, y, w, h): side ``scale`` × face height, ``head_room`` × face
    height kept above the face, centred horizontally on it."""
    fx, fy, fw, fh = face
    side = max(scale * max(fw, fh), min_side)
    side = min(side, w, h)
    top = fy - head_room * fh
    return square_at(w, h, fx + fw / 2, top + side / 2, side)


def load_boxes(path: str) -> dict[str, Box]:
    """``{name: [left, top, right, bottom]}`` from a JSON file; names match a file's relative path, its
    name or its stem."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"boxes file not found: {p}", "give --boxes a JSON file of {name: [l, t, r, b]}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return {str(k): tuple(int(v) for v in box) for k, box in data.items()}  # type: ignore[misc]
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"cannot read boxes from {p.name}: {exc}",
                        'write it as {"photo.jpg": [left, top, right, bottom], ...}') from None


def manual_box(boxes: dict[str, Box], rel: str, w: int, h: int) -> Optional[Box]:
    """The user's box for this file (clamped to the image), or None when it has none or it is empty."""
    name = rel.rsplit("/", 1)[-1]
    box = boxes.get(rel) or boxes.get(name) or boxes.get(name.rsplit(".", 1)[0])
    if box is None:
        return None
    l, t, r, b = box
    l, t, r, b = max(0, l), max(0, t), min(w, r), min(h, b)
    if r - l < 2 or b - t < 2:
        return None
    return l, t, r, b


def scale_box(box: Box, k: float) -> Box:
    return tuple(int(round(v * k)) for v in box)  # type: ignore[return-value]


def fit_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """Crop none: the size with the longer side capped at ``max_side`` (never upscaled)."""
    if max_side <= 0 or max(w, h) <= max_side:
        return w, h
    k = max_side / max(w, h)
    return max(1, round(w * k)), max(1, round(h * k))


# Crop modes a host provides (the WebUI adapter registers "focal": its own focal-point crop). A function takes
# the RGB image and returns a square box (left, top, right, bottom) in that image's pixels.
HOST_CROP_MODES: dict = {}


def register_crop_mode(name: str, box_fn) -> None:
    HOST_CROP_MODES[name] = box_fn


def unregister_crop_mode(name: str) -> None:
    HOST_CROP_MODES.pop(name, None)
