"""Steps 1–2 of the flow: import a folder of photos, crop them, remove their background.

``prepare_folder(src, dest, cfg, progress, should_stop)`` is the entry point (``pipeline.py``); the pieces
are ``importer`` (file checks, decoding, zips), ``crop`` (where the square goes), ``background`` (rembg
sessions) and ``edges`` (halo-free cut-outs). Heavy modules (OpenCV, rembg, onnxruntime) load only when a
batch needs them, so importing this package is cheap.
"""

from __future__ import annotations


def prepare_folder(*args, **kwargs):
    """See ``lora_trainer.prepare.pipeline.prepare_folder``."""
    from .pipeline import prepare_folder as run

    return run(*args, **kwargs)


__all__ = ["prepare_folder"]
