"""modules/textual_inversion/autocrop.py: focal-point crop (``Settings``, ``crop_image``, ``focal_point``).

The WebUI weighs face, entropy and corner points (OpenCV; YuNet when ``dnn_model_path`` is given, a Haar
cascade otherwise). The double's focal point is the brightness-weighted centroid; scaling and clamping of
the crop follow the WebUI's ``crop_image``. 1.10 has ``model_file_path`` (YuNet's cache path) and a
``download_and_cache_models()`` that fetches it from GitHub (which the adapter must never call offline).
"""

import os

import numpy as np
from modules import paths_internal

model_dir_opencv = os.path.join(paths_internal.models_path, "opencv")
model_file_path = os.path.join(model_dir_opencv, "face_detection_yunet_2023mar.onnx")
download_calls = 0
crop_calls = []


def download_and_cache_models():
    global download_calls
    download_calls += 1
    raise RuntimeError("double: would download the YuNet face model from github.com")


class PointOfInterest:
    def __init__(self, x, y, weight=1.0, size=10):
        self.x, self.y, self.weight, self.size = x, y, weight, size


class Settings:
    def __init__(self, crop_width=512, crop_height=512, corner_points_weight=0.5, entropy_points_weight=0.5,
                 face_points_weight=0.5, annotate_image=False, dnn_model_path=None):
        self.crop_width = crop_width
        self.crop_height = crop_height
        self.corner_points_weight = corner_points_weight
        self.entropy_points_weight = entropy_points_weight
        self.face_points_weight = face_points_weight
        self.annotate_image = annotate_image
        self.desktop_view_image = False
        self.dnn_model_path = dnn_model_path


def focal_point(im, settings):
    a = np.asarray(im.convert("L"), dtype=np.float64) + 1e-6
    ys, xs = np.mgrid[0:a.shape[0], 0:a.shape[1]]
    return PointOfInterest(int((xs * a).sum() / a.sum()), int((ys * a).sum() / a.sum()))


def crop_image(im, settings):
    crop_calls.append(settings)
    w, h, cw, ch = im.width, im.height, settings.crop_width, settings.crop_height
    if w > h:
        scale = ch / h
    elif h > w:
        scale = cw / w
    else:
        scale = (ch / h) if ch > cw else (cw / w)
    im = im.resize((int(w * scale), int(h * scale)))
    focus = focal_point(im, settings)
    x1 = min(max(focus.x - cw // 2, 0), im.width - cw)
    y1 = min(max(focus.y - ch // 2, 0), im.height - ch)
    results = [im.crop((x1, y1, x1 + cw, y1 + ch))]
    if settings.annotate_image:
        results.append(im.copy())
    return results
