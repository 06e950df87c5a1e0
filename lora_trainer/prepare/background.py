"""Step 2b, background removal: rembg's model sessions, checked before use, and the clean composite.

Why the checks: rembg creates a session by *downloading* its model when the file is missing or its md5
differs (``pooch.retrieve``). Offline that hangs or fails deep inside a batch. So the file is looked up
first — ``$U2NET_HOME``, the WebUI's ``models/u2net``, ``~/.u2net`` (``model_store.background_dirs``) — and a
missing one is a UserError that names the file, its URL and where to put it. Downloads happen only through
the model store, when the user asks (``models download u2net``). The session class is rembg's own, with its
``download_models`` pointed at the file we found: rembg's real pre- and post-processing run, and nothing is
ever fetched (a file that is not byte-identical to rembg's release, e.g. a fine-tune, is accepted too).

rembg is imported lazily: in the WebUI it is installed ``--no-deps`` and a piece may be missing, which
must not break the extension's import — the user sees which module to install instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import UserError
from .edges import EdgeSettings, composite, refine


def u2net_home() -> Path:
    """Where a background model goes: ``$U2NET_HOME``, else the WebUI's ``models/u2net``, else rembg's
    default ``~/.u2net``."""
    from ..model_store import background_dirs

    return background_dirs()[0]


def model_file(name: str, model_path: str = "") -> Path:
    """The custom file, else the first of the background folders that holds ``<name>.onnx``, else where it
    would go."""
    if name == "custom":
        return Path(os.path.expanduser(model_path))
    from ..model_store import background_dirs

    dirs = background_dirs()
    return next((d / f"{name}.onnx" for d in dirs if (d / f"{name}.onnx").is_file()), dirs[0] / f"{name}.onnx")


def check_model(name: str, model_path: str = "") -> Path:
    """The model's file, or a UserError saying which file is missing and where to put it."""
    path = model_file(name, model_path)
    if path.is_file() and path.stat().st_size > 0:
        return path
    if name == "custom":
        raise UserError(f"background model file not found: {path}", "give --model-path an existing .onnx file")
    from .. import model_store

    if name in model_store.CATALOGUE:
        hint = f"{model_store.missing_text(name)} (set U2NET_HOME to use another folder)"
    else:
        hint = f"put {name}.onnx in {u2net_home()} (set U2NET_HOME to use another folder); it is not downloaded"
    raise UserError(f"background model {name!r} is missing: {path} does not exist", hint)


def _import(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise UserError(f"background removal needs {missing!r}, which is not installed ({exc})",
                        "install rembg 2.0.69 and onnxruntime (the extension's installer does this), or "
                        "choose background none") from None


# What ``import rembg.sessions`` needs (rembg 2.0.69's own imports; in the WebUI it is installed --no-deps).
REMBG_MODULES = ("rembg", "onnxruntime", "pymatting", "cv2", "scipy", "pooch", "jsonschema")


def rembg_available() -> tuple[bool, str]:
    """(True, "") when rembg and what it imports are installed; else (False, what is missing). Never downloads.

    Looked up, not imported: importing rembg imports pymatting, whose numba code compiles on the first
    import (~40 s once after install), and the tab asks this while the WebUI starts."""
    from ..compat import has_module

    missing = [m for m in REMBG_MODULES if not has_module(m)]
    if missing:
        return False, (f"background removal needs {missing[0]!r}, which is not installed — install rembg "
                       f"2.0.69 and onnxruntime (the extension's installer does this), or choose background none")
    return True, ""


class MaskModel:
    """One rembg session for a whole batch; ``predict`` is safe to call from several threads."""

    def __init__(self, name: str, model_path: str = "", threads: int = 0):
        path = check_model(name, model_path)  # before anything can try to download
        ort = _import("onnxruntime")
        sessions = _import("rembg.sessions")
        cls = next((c for c in sessions.sessions_class if c.name() == ("u2net_custom" if name == "custom"
                                                                          else name)), None)
        if cls is None:
            raise UserError(f"rembg has no model named {name!r}", "pick one listed by --help")

        class _LocalFile(cls):  # rembg's session, reading the file we checked instead of downloading
            @classmethod
            def download_models(klass, *args, **kwargs):
                return str(path)

        opts = ort.SessionOptions()
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = _LocalFile(cls.name(), opts, model_path=str(path))
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
            raise UserError(f"cannot load background model {path}: {type(exc).__name__}: {exc}",
                            "the file may be incomplete: replace it") from None
        self.name = name

    def predict(self, rgb: Image.Image) -> np.ndarray:
        """The model's mask for ``rgb`` as float32 H×W in [0, 1] (rembg resizes it to the image)."""
        mask = self.session.predict(rgb.convert("RGB"))[0]
        return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0


def matting(rgb: Image.Image, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rembg's alpha matting (pymatting): (alpha, colour) for hair and fur; slow."""
    bg = _import("rembg.bg")
    cut = bg.alpha_matting_cutout(rgb, Image.fromarray((mask * 255).astype(np.uint8), "L"), 240, 10, 10)
    arr = np.asarray(cut.convert("RGBA"), dtype=np.float32) / 255.0
    return arr[..., 3], arr[..., :3]


def cut_out(rgb: Image.Image, mask: np.ndarray, fill: Optional[tuple[int, int, int]],
            edges: EdgeSettings, alpha_matting: bool = False, clean: bool = True
            ) -> tuple[Image.Image, np.ndarray]:
    """The image over ``fill`` (RGB) or with transparency (RGBA, ``fill`` None), and the final alpha.

    ``clean`` False keeps the mask as given (a file's own transparency is trusted as drawn).
    """
    arr = np.asarray(rgb.convert("RGB"), dtype=np.float32) / 255.0
    if alpha_matting:
        try:
            alpha, colour = matting(rgb, mask)
        except ValueError:  # pymatting gives up on masks with no unknown region: the plain path is fine
            alpha, colour = refine(arr, mask, edges)
    elif clean:
        alpha, colour = refine(arr, mask, edges)
    else:
        alpha, colour = mask.astype(np.float32), arr
    if fill is None:
        rgba = np.dstack([colour, alpha])
        return Image.fromarray(np.round(rgba * 255).astype(np.uint8), "RGBA"), alpha
    out = composite(colour, alpha, np.asarray(fill, dtype=np.float32) / 255.0)
    return Image.fromarray(np.round(np.clip(out, 0, 1) * 255).astype(np.uint8), "RGB"), alpha
