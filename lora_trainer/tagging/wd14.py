"""WD14 tagger (SmilingWolf's WD v1.4 / v3 models) on onnxruntime: ``model.onnx`` + ``selected_tags.csv``.

The model interface, which every WD14 release shares: input ``[N, S, S, 3]`` float32, BGR, 0–255, the
image padded to a white square and resized to S (448 for v3); output ``[N, tags]`` probabilities in the
order of ``selected_tags.csv`` (columns ``tag_id,name,category,count``). Category 9 rows are ratings
(general, sensitive, …): never written as tags. Category 4 rows are characters, which need a higher
threshold before a caption names one.

Nothing is downloaded here: the model folder is configured (``TagConfig.model_dir``) or is the model
store's folder of a named v3 model (``wd-vit-tagger-v3``…, fetched by ``models download``), and a missing
file is named by ``available()`` — with its URL and the download command — before anything loads.
Like kohya's captioner: thresholds per category (general, character), character tags optional, and the
rating (the best of the category-9 rows) written first only when asked.
"""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .base import TagResult

MODEL_FILE, TAGS_FILE = "model.onnx", "selected_tags.csv"
RATING, CHARACTER = "9", "4"
DEFAULT_SIZE = 448


HOST_MODEL_DIRS: list[Path] = []
"""Folders a host prefers for the model (the WebUI: ``<models>/wd14``), in order, before our cache folder."""


DEFAULT_MODEL = "wd-vit-tagger-v3"
"""The model store's tagger that ``wd14`` means when no folder holds a model of the user's own."""


def default_model_dir() -> Path:
    """For the tagger ``wd14``: the first of the host's folders and ``$LORA_TRAINER_CACHE/models/wd14``
    (default ``~/.cache/lora_trainer/models/wd14``) that holds a model placed there by hand, else the
    store's folder of ``DEFAULT_MODEL`` (where ``models download`` puts it, downloaded or not)."""
    from .. import model_store

    candidates = [*HOST_MODEL_DIRS, model_store.cache_root() / "models" / "wd14"]
    hand = next((d for d in candidates if (d / MODEL_FILE).is_file()), None)
    if hand is not None:
        return hand
    return model_store.find(DEFAULT_MODEL) or model_store.target_dir(model_store.get_spec(DEFAULT_MODEL))


def read_labels(path: Path) -> tuple[list[str], list[str]]:
    """(names, categories) from ``selected_tags.csv``."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "name" not in rows[0]:
        raise ValueError(f"{path.name} has no 'name' column")
    return [r["name"] for r in rows], [str(r.get("category", "0")) for r in rows]


def to_input(image: Image.Image, size: int) -> np.ndarray:
    """One image as the model wants it: white-padded square, ``size``², BGR float32 0–255."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    image = image.convert("RGB")
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    canvas = canvas.resize((size, size), Image.BICUBIC)
    return np.asarray(canvas, dtype=np.float32)[:, :, ::-1]


class WD14Tagger:
    """The Tagger protocol over a WD14 ONNX model; the session loads on first use and is reused."""

    name = "wd14"

    def __init__(self, model_dir: str | os.PathLike = "", character_threshold: float = 0.85, threads: int = 0,
                 model_id: str = "", character_tags: bool = True, rating_tag: bool = False):
        """``model_id``: a store model (``wd-vit-tagger-v3``…) whose folder is used when ``model_dir`` is
        empty; it also names the download in the "missing" message."""
        if model_id:
            self.name = model_id
        if str(model_dir):
            self.model_dir = Path(model_dir)
        elif model_id:
            from .. import model_store

            self.model_dir = model_store.find(model_id) or model_store.target_dir(model_store.get_spec(model_id))
        else:
            self.model_dir = default_model_dir()
        self.model_id = model_id or (DEFAULT_MODEL if self.model_dir.name == DEFAULT_MODEL else "")
        self.character_threshold = character_threshold
        self.character_tags = character_tags
        self.rating_tag = rating_tag
        self.threads = threads
        self._session = None
        self._labels: Optional[tuple[list[str], list[str]]] = None
        self._lock = threading.Lock()

    def available(self) -> tuple[bool, str]:
        missing = [f for f in (MODEL_FILE, TAGS_FILE) if not (self.model_dir / f).is_file()]
        if missing and self.model_id:
            from .. import model_store

            return False, (f"{', '.join(missing)} not found in {self.model_dir}: "
                           f"{model_store.missing_text(self.model_id)}")
        if missing:
            return False, (f"{', '.join(missing)} not found in {self.model_dir}: put a WD14 model's "
                           f"{MODEL_FILE} and {TAGS_FILE} there (or set the model folder)")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return False, f"onnxruntime is not installed ({exc})"
        return True, ""

    def _load(self):
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                if self.threads:
                    opts.intra_op_num_threads = self.threads
                sess = ort.InferenceSession(str(self.model_dir / MODEL_FILE), opts,
                                            providers=ort.get_available_providers())
                labels = read_labels(self.model_dir / TAGS_FILE)
                n_out = sess.get_outputs()[0].shape[-1]
                if isinstance(n_out, int) and n_out != len(labels[0]):
                    from ..errors import UserError

                    raise UserError(f"the WD14 model has {n_out} outputs but {TAGS_FILE} lists {len(labels[0])} "
                                    f"tags", "use the selected_tags.csv that came with the model")
                self._session, self._labels = sess, labels
        return self._session, self._labels

    def _input_spec(self, sess) -> tuple[int, bool]:
        """(side, fixed batch of one?) from the model's declared input shape."""
        shape = sess.get_inputs()[0].shape
        side = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else DEFAULT_SIZE
        return side, shape[0] == 1

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        sess, _ = self._load()
        side, single = self._input_spec(sess)
        name = sess.get_inputs()[0].name
        batch = np.stack([to_input(im, side) for im in images])
        if single:
            probs = np.concatenate([sess.run(None, {name: batch[i:i + 1]})[0] for i in range(len(images))])
        else:
            probs = sess.run(None, {name: batch})[0]
        if probs.min() < 0 or probs.max() > 1:  # a model exported without its final sigmoid
            probs = 1.0 / (1.0 + np.exp(-probs))
        return probs

    def tag(self, images: Sequence[Image.Image], threshold: float = 0.35) -> list[TagResult]:
        if not images:
            return []
        probs = self.probabilities(images)
        names, cats = self._labels
        cats_arr = np.asarray(cats)
        limit = np.where(cats_arr == CHARACTER, self.character_threshold if self.character_tags else np.inf,
                         threshold)
        limit = np.where(cats_arr == RATING, np.inf, limit)  # ratings are a line of their own, below
        ratings = np.flatnonzero(cats_arr == RATING)
        out = []
        for p in probs:
            idx = np.flatnonzero(p >= limit)
            idx = idx[np.argsort(-p[idx], kind="stable")]
            tags = [(names[i], float(p[i])) for i in idx]
            if self.rating_tag and len(ratings):  # kohya's --use_rating_tags: the likeliest rating, first
                best = ratings[int(np.argmax(p[ratings]))]
                tags.insert(0, (names[best], float(p[best])))
            out.append(TagResult(tags))
        return out
