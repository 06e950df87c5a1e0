"""The training dataset: kohya folders, captions, aspect buckets, caption shuffle/dropout, latent cache.

Rules (folder names, buckets, caption processing) are pure functions; the cache and batching use them.
The source folder is only read: cached latents live in memory or in the job folder.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from ..errors import UserError
from ..prepare.importer import CAPTION_EXTS, SOURCE_IMAGE_EXTS, VIDEO_EXTS

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
UNREAD_EXTS = tuple(e for e in SOURCE_IMAGE_EXTS if e not in IMAGE_EXTS) + tuple(sorted(VIDEO_EXTS))
"""What the import step takes (HEIC, AVIF, GIF, TIFF) and phone videos, which training does not read: reported
as left out, never skipped silently. The prepare step converts the photos to PNG."""
_LISTED_EXTS = frozenset(IMAGE_EXTS + UNREAD_EXTS)
KOHYA_DIR = re.compile(r"^(\d+)_(.+)$")


# --------------------------------------------------------------------------------------------- folders

def parse_kohya_dirname(name: str) -> Optional[tuple[int, str]]:
    """``"30_Name"`` -> ``(30, "Name")``; anything else -> None (a plain folder)."""
    m = KOHYA_DIR.match(name)
    if not m or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)), m.group(2)


def caption_file(image: Path) -> Optional[Path]:
    """The caption file training reads for ``image``: ``.txt``, else ``.caption``; None when it has neither
    (a caption that is a link leading out of the image's folder is not read: ``paths``)."""
    from .. import paths

    for ext in CAPTION_EXTS:
        cap = image.with_suffix(ext)
        if cap.is_file() and not (cap.is_symlink() and paths.leads_out(cap, [image.parent])):
            return cap
    return None


def read_caption(image: Path) -> Optional[str]:
    """The image's caption (``caption_file``'s text, whitespace collapsed); None when it has none."""
    cap = caption_file(image)
    if cap is None:
        return None
    raw = cap.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030", errors="replace")
    return " ".join(text.split())


@dataclass
class ImageItem:
    path: Path
    caption: str
    repeats: int
    folder: str
    has_caption: bool = True
    mask: Optional[Path] = None


@dataclass
class DatasetScan:
    items: list[ImageItem]
    missing_captions: list[Path] = field(default_factory=list)
    folders: dict[str, dict] = field(default_factory=dict)
    left_out: list[Path] = field(default_factory=list)
    """Files in a format training does not read (``UNREAD_EXTS``: HEIC, TIFF, GIF, videos…)."""

    @property
    def num_images(self) -> int:
        return len(self.items)

    @property
    def num_samples(self) -> int:
        return sum(i.repeats for i in self.items)


def list_images(folder: Path) -> list[Path]:
    """The images of a dataset folder training reads (masks and hidden files excluded), sorted."""
    return read_folder(folder)[0]


def read_folder(folder: Path) -> tuple[list[Path], list[Path]]:
    """One listing of ``folder``: (the images training reads, the files it leaves out — ``UNREAD_EXTS``), each
    sorted. Masks (``*.mask.png``) and hidden files are neither, nor a link leading out of ``folder`` (nothing
    reads, tags or trains on a file through a link leading elsewhere: ``paths``)."""
    from .. import paths

    images, left_out = [], []
    for p in folder.iterdir():
        ext = p.suffix.lower()
        if p.name.startswith(".") or p.stem.endswith(".mask") or ext not in _LISTED_EXTS or not p.is_file() \
                or (p.is_symlink() and paths.leads_out(p, [folder])):
            continue
        (images if ext in IMAGE_EXTS else left_out).append(p)
    return sorted(images), sorted(left_out)


def scan_dataset(root: str | Path, default_repeats: int) -> DatasetScan:
    """Read a kohya train folder (``<repeats>_<name>`` subfolders) or a plain folder of images.

    An image without a caption is reported by name and trained on its folder's name part, which is what
    kohya does — but silently there, which cost the tutorial's users a run.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}", "give --data a folder of images (or a kohya folder)")
    subdirs = [(d, parse_kohya_dirname(d.name)) for d in sorted(root.iterdir()) if d.is_dir()]
    kohya = [(d, parsed) for d, parsed in subdirs if parsed]
    groups = [(d, rep, name) for d, (rep, name) in kohya] if kohya else [(root, default_repeats, root.name)]
    items: list[ImageItem] = []
    missing: list[Path] = []
    left_out: list[Path] = []
    folders: dict[str, dict] = {}
    for folder, repeats, class_name in groups:
        images, unread = read_folder(folder)
        left_out += unread
        folders[folder.name] = {"n_repeats": repeats, "img_count": len(images)}
        for img in images:
            cap = read_caption(img)
            if cap is None:
                missing.append(img)
            mask = img.with_name(img.stem + ".mask.png")
            items.append(ImageItem(img, cap if cap is not None else class_name, repeats, folder.name,
                                   cap is not None, mask if mask.is_file() else None))
    if not items and left_out:
        raise UserError(f"no images training can read in {root}: {left_out_text(left_out)}",
                        f"run the prepare step on them first (python -m lora_trainer prepare --input {root} "
                        f"--output-dir DIR): it writes them as PNG")
    if not items:
        raise UserError(f"no images in {root}", f"put {', '.join(IMAGE_EXTS)} files there (or in N_name subfolders)")
    return DatasetScan(items, missing, folders, left_out)


def left_out_text(paths: Sequence[Path]) -> str:
    """``"3 files in a format training does not read (IMG_1.HEIC, a.tif, …)"``."""
    shown = ", ".join(p.name for p in paths[:3]) + (", …" if len(paths) > 3 else "")
    return f"{len(paths)} file(s) in a format training does not read ({shown})"


def tag_frequency(items: Iterable[ImageItem]) -> dict[str, dict[str, int]]:
    """``{folder: {tag: count}}`` as kohya's ``ss_tag_frequency``."""
    freq: dict[str, dict[str, int]] = {}
    for it in items:
        d = freq.setdefault(it.folder, {})
        for tag in split_tags(it.caption):
            d[tag] = d.get(tag, 0) + 1
    return freq


# --------------------------------------------------------------------------------------------- captions

def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def process_caption(caption: str, rng: random.Random, shuffle: bool = False, keep_tokens: int = 0,
                    dropout_rate: float = 0.0) -> str:
    """Caption dropout, then shuffle of the tags after the first ``keep_tokens`` ones."""
    if dropout_rate > 0 and rng.random() < dropout_rate:
        return ""
    if not shuffle:
        return caption
    tags = split_tags(caption)
    head, tail = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(tail)
    return ", ".join(head + tail)


# --------------------------------------------------------------------------------------------- buckets

def make_buckets(resolution: int, min_reso: int, max_reso: int, step: int) -> list[tuple[int, int]]:
    """All (w, h) with sides multiple of ``step`` in [min, max] and area <= resolution² (kohya's rule)."""
    max_area = resolution * resolution
    out = set()
    w = min_reso
    while w <= max_reso:
        h = min(max_reso, (max_area // w) // step * step)
        if h >= min_reso:
            out.add((w, h))
            out.add((h, w))
        w += step
    out.add((resolution // step * step, resolution // step * step))
    return sorted(out)


def assign_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]], resolution: int,
                  step: int, no_upscale: bool = True) -> tuple[int, int]:
    """The bucket for an image: nearest aspect ratio; without upscaling a small image gets its own size
    rounded down to ``step`` (so it is only ever cropped, never enlarged)."""
    if no_upscale and width * height <= resolution * resolution:
        ar = width / height
        bw = max(step, width // step * step)
        bh = max(step, height // step * step)
        # keep the aspect error small: shrink the side that overshoots
        if abs(bw / bh - ar) > 0.1 * ar:
            bh = max(step, int(bw / ar) // step * step)
        return bw, bh
    ar = width / height
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - math.log(ar)), -b[0] * b[1]))


def resize_crop(image, size: tuple[int, int]):
    """Resize so the image covers ``size`` (w, h) and centre-crop to it. PIL in, PIL out."""
    from PIL import Image

    w, h = image.size
    tw, th = size
    scale = max(tw / w, th / h)
    nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
    if (nw, nh) != (w, h):
        image = image.resize((nw, nh), Image.LANCZOS if scale < 1 else Image.BICUBIC)
    left, top = (nw - tw) // 2, (nh - th) // 2
    return image.crop((left, top, left + tw, top + th))


# --------------------------------------------------------------------------------------------- epochs

def epoch_batches(bucket_of: Sequence[tuple[int, int]], repeats: Sequence[int], batch_size: int,
                  rng: random.Random) -> list[list[int]]:
    """One epoch's batches of item indices: every item ``repeats`` times, batches never mix buckets."""
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for idx, (b, r) in enumerate(zip(bucket_of, repeats)):
        by_bucket.setdefault(b, []).extend([idx] * r)
    batches: list[list[int]] = []
    for b in sorted(by_bucket):
        idxs = by_bucket[b]
        rng.shuffle(idxs)
        batches.extend(idxs[i:i + batch_size] for i in range(0, len(idxs), batch_size))
    rng.shuffle(batches)
    return batches


def steps_per_epoch(bucket_of: Sequence[tuple[int, int]], repeats: Sequence[int], batch_size: int) -> int:
    counts: dict[tuple[int, int], int] = {}
    for b, r in zip(bucket_of, repeats):
        counts[b] = counts.get(b, 0) + r
    return sum(math.ceil(c / batch_size) for c in counts.values())


# --------------------------------------------------------------------------------------------- loading

def load_image(path: Path):
    """RGB PIL image with EXIF orientation applied."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return im.convert("RGB")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed, read from the header only (EXIF rotations 5–8 swap the sides)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def to_tensor(image):
    """PIL RGB -> float tensor (3,H,W) in [-1, 1]."""
    import numpy as np
    import torch

    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_mask(path: Optional[Path], size: tuple[int, int]):
    """The saved mask resized to the latent grid later; (1,H,W) in [0,1], or None."""
    if path is None:
        return None
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as m:
        m = resize_crop(m.convert("L"), size)
        return torch.from_numpy(np.asarray(m, dtype=np.float32) / 255.0)[None]


ProgressFn = Callable[[int, int], None]


class LatentDiskCache:
    """Latents kept in a job folder (``cache_latents_to_disk``): one safetensors file per image and bucket,
    named by a hash of the image's path, size and modification time, the model and the seed (a changed image,
    model or seed is encoded again). Writes are atomic; a file that cannot be read is encoded again."""

    def __init__(self, folder: Path, model: str, seed: int):
        self.folder, self.model, self.seed = Path(folder), model, seed

    def _file(self, image: Path, bucket: tuple[int, int], flip: bool = False) -> Path:
        from ..workspace import file_version_key

        key = file_version_key(image, f"{bucket[0]}x{bucket[1]}", self.model, self.seed, *(["flip"] if flip else []))
        return self.folder / f"{key[:40]}.safetensors"

    def get(self, image: Path, bucket: tuple[int, int], flip: bool = False):
        from safetensors.torch import load_file

        f = self._file(image, bucket, flip)
        if not f.is_file():
            return None
        try:
            return load_file(str(f))["latent"]
        except Exception:  # noqa: BLE001 - a damaged cache file only costs an encode
            return None

    def put(self, image: Path, bucket: tuple[int, int], latent, flip: bool = False) -> None:
        from safetensors.torch import save_file

        from ..workspace import atomic_path

        f = self._file(image, bucket, flip)
        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            save_file({"latent": latent.detach().float().cpu().contiguous()}, str(tmp))
