"""Files on disk: atomic writes, and the layout of a LoRA project (DESIGN.md "On disk").

Every file is written to a temporary name in its own folder and renamed into place, so a reader (or a
crash) never sees a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

TMP_PREFIX = ".lt-tmp-"


def _process_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would set it for every thread meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # no /proc (macOS, Windows): set and restore once, at import
    os.umask(old)
    return old


# The mode a plain open() gives a new file. mkstemp makes 0600, which would leave a LoRA copied into the
# WebUI's Lora folder unreadable to another user's ComfyUI or web server.
FILE_MODE = 0o666 & ~_process_umask()


def file_version_key(path: str | os.PathLike, *extra: object) -> str:
    """A hex digest naming one version of a file — its resolved path, size and modification time — and
    ``extra`` (what else a derived file depends on): the key of every cache that derives a file from a photo
    (gallery thumbnails, cached latents), so an edited or replaced photo is derived again."""
    import hashlib

    st = os.stat(path)
    parts = [str(Path(path).resolve()), str(st.st_size), str(st.st_mtime_ns), *map(str, extra)]
    return hashlib.sha256("|".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it onto ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf by None (JSON has no such numbers; FastAPI would answer 500, WEBUI_API.md §13)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(json_safe(obj), ensure_ascii=False, indent=2))


def leftover_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files a crashed write left behind (never under a final name)."""
    return sorted(Path(folder).rglob(TMP_PREFIX + "*"))


class Project:
    """A LoRA project in the workspace: ``<workspace>/<name>/`` with source/, dataset/, jobs/, output/."""

    SUBFOLDERS = ("source", "dataset", "jobs", "output", "cache")  # (cache/: the tab's thumbnails)

    def __init__(self, workspace: str | os.PathLike, name: str):
        self.root = Path(workspace) / name
        self.name = name

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def output(self) -> Path:
        return self.root / "output"

    def create(self) -> "Project":
        for p in (self.source, self.dataset, self.jobs, self.output):
            p.mkdir(parents=True, exist_ok=True)
        return self
