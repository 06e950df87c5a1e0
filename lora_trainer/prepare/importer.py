"""Step 1, import: find the files, decode every image safely, and say what was wrong with the rest.

Our users arrive with a phone folder: HEIC-era JPEGs rotated by EXIF, a CMYK file from a print shop, a
16-bit PNG, a GIF, a zero-byte upload, a half-copied file, screenshots twice. Each such file gets one line
in the report (name + reason) and the batch goes on; nothing here ever writes to the source folder.

Decoding is the only heavy part and runs in worker threads (Pillow releases the GIL while decoding). For
JPEGs it asks the decoder for a reduced scale (``draft``) when the crop needs fewer pixels: a 12 MP phone
photo decodes at 1/4 or 1/8 size several times faster.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import stat
import threading
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Optional, Union

import numpy as np
from PIL import Image, ImageOps

from ..workspace import atomic_path

SIDECAR_EXTS = {".txt", ".caption", ".json", ".toml", ".npz", ".xmp", ".aae"}
CAPTION_EXTS = (".txt", ".caption")
VIDEO_EXTS = {".mov", ".mp4", ".m4v", ".3gp", ".avi", ".mkv", ".webm"}
VIDEO_REASON = "a video (a Live Photo's motion part, or a clip), not a photo"
SOURCE_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif")
"""What the import step takes (uploads, the source gallery); what it writes is PNG."""
BROWSER_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".avif")
"""Formats browsers show; the others (HEIC, TIFF) get a JPEG thumbnail for the tab's gallery."""
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")


@functools.lru_cache(maxsize=None)
def extra_decoders() -> frozenset:
    """The phone formats Pillow can decode here, their plugins registered once: ``heif`` (iPhone HEIC,
    pillow-heif) and ``avif`` (pillow-avif-plugin, which the WebUI ships). pillow-heif applies the file's
    rotation itself and sets the EXIF orientation to 1, so no photo is turned twice."""
    found = set()
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        found.add("heif")
    except ImportError:
        pass
    try:
        import pillow_avif  # noqa: F401 - registers itself

        found.add("avif")
    except ImportError:
        pass
    return frozenset(found)


def _brand(path: Path) -> bytes:
    """The ISO-BMFF major brand (``heic``, ``avif``…) of a file, or b"" when it is not one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return b""
    return head[8:12] if head[4:8] == b"ftyp" else b""


class BadImage(Exception):
    """A file that cannot be used; ``str(exc)`` is the reason shown in the report."""


# ------------------------------------------------------------------------ the decompression-bomb limit
# Pillow has its own guard: a module-wide MAX_IMAGE_PIXELS (89.5 MP), a DecompressionBombWarning above it
# and an error above twice it (179 MP). Left alone, it overrides the user's max_megapixels (a 200 MP scan is
# refused whatever the setting), its messages quote its numbers, and its warning lines leak onto stderr.
# So while our decoding runs, Pillow's limit IS the user's setting, and the one warning it can then give
# (for an image we refuse anyway, with our own line) is filtered by its exact text. The value is shared
# by threads and by the host WebUI: it is set when the first of our decodes starts and put back when the
# last one ends, under a lock, and the filter goes with it, so nothing is left changed for the host.
_LIMIT_LOCK = threading.Lock()
_ACTIVE: list = []        # the limits of the decodes running now (threads; perhaps different settings)
_SAVED: dict = {}         # Pillow's own value, and our warning filter while installed
_PILLOW_TEXT = re.compile(r"\((\d+) pixels\)")


def _apply_limit() -> None:
    limit = max(_ACTIVE)
    Image.MAX_IMAGE_PIXELS = limit
    _drop_filter()
    warnings.filterwarnings("ignore", message=rf"Image size \(\d+ pixels\) exceeds limit of {limit} pixels",
                            category=Image.DecompressionBombWarning)
    _SAVED["filter"] = warnings.filters[0]


def _drop_filter() -> None:
    item = _SAVED.pop("filter", None)
    if item is not None:
        try:
            warnings.filters.remove(item)
        except ValueError:  # someone's catch_warnings() swapped the list meanwhile: ours went with it
            pass
        mutated = getattr(warnings, "_filters_mutated", None)
        if mutated is not None:
            mutated()


@contextlib.contextmanager
def pixel_limit(max_pixels: float):
    """Pillow's decompression-bomb limit set to ``max_pixels`` (the user's max_megapixels) for the
    duration; reentrant and thread-safe; Pillow's value is restored when the last user leaves."""
    limit = max(1, int(max_pixels))
    with _LIMIT_LOCK:
        if not _ACTIVE:
            _SAVED["pixels"] = Image.MAX_IMAGE_PIXELS
        _ACTIVE.append(limit)
        if Image.MAX_IMAGE_PIXELS != max(_ACTIVE) or "filter" not in _SAVED:
            _apply_limit()
    try:
        yield
    finally:
        with _LIMIT_LOCK:
            _ACTIVE.remove(limit)
            if _ACTIVE:
                if Image.MAX_IMAGE_PIXELS != max(_ACTIVE):
                    _apply_limit()
            else:
                _drop_filter()
                Image.MAX_IMAGE_PIXELS = _SAVED.pop("pixels")


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.1f}" if pixels < 1e7 else f"{pixels / 1e6:.0f}"


def too_many_pixels(pixels: float, max_pixels: float, size: str = "") -> str:
    """The report line for an image over the limit, in the user's terms (their setting, the option)."""
    return (f"too many pixels: {size + ' = ' if size else ''}{_mp(pixels)} MP is over the {max_pixels / 1e6:g} MP "
            f"limit (decompression-bomb guard): if the photo is real, raise --max-megapixels (max_megapixels)")


def _bomb_reason(exc: BaseException, max_pixels: float) -> str:
    m = _PILLOW_TEXT.search(str(exc))
    return too_many_pixels(float(m.group(1)) if m else 2 * max_pixels, max_pixels)


def display_name(name: str) -> str:
    """A printable, UTF-8-encodable version of a file name (bytes that are not UTF-8 become U+FFFD).

    On Linux a name that is not valid UTF-8 arrives as surrogate escapes, which cannot be written to a
    UTF-8 report; CJK names pass through unchanged.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def list_files(src: Path) -> list[Path]:
    """Every regular file under ``src``, sorted by folder, then name, then extension (symlinks are not
    followed). Sorting the name before the extension puts an original before its copies
    (``IMG_1.jpg`` before ``IMG_1 (1).jpg``), so the copy is the one reported as the duplicate."""
    out = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for f in files:
            p = Path(root) / f
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return sorted(out, key=lambda p: (p.parent.relative_to(src).as_posix(), p.stem, p.suffix))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Decoded:
    """An image ready for cropping: RGB pixels at ``scale`` of the oriented original, plus what happened."""

    rgb: Image.Image
    alpha: Optional[Image.Image]     # the file's own transparency (L), when it had any
    size: tuple[int, int]            # the original's size after EXIF orientation
    scale: float                     # rgb.width / size[0]  (< 1 when the JPEG was decoded at reduced scale)
    notes: list[str] = field(default_factory=list)
    format: str = ""


def header(path: Path, max_pixels: float) -> tuple[int, int, str]:
    """(width, height, format) from the header only; BadImage for empty, unknown or oversized files."""
    if path.stat().st_size == 0:
        raise BadImage("empty file (0 bytes)")
    extra_decoders()
    try:
        with pixel_limit(max_pixels), Image.open(path) as im:
            w, h, fmt = im.size[0], im.size[1], im.format or ""
    except Image.DecompressionBombError as exc:
        raise BadImage(_bomb_reason(exc, max_pixels)) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for bad headers
        raise BadImage(_reason(exc, path)) from None
    if w * h > max_pixels:
        raise BadImage(too_many_pixels(w * h, max_pixels, f"{w}x{h}"))
    return w, h, fmt


def _reason(exc: BaseException, path: Optional[Path] = None) -> str:
    msg = str(exc) or type(exc).__name__
    if "cannot identify image file" in msg:
        brand = _brand(path) if path is not None else b""
        if brand in _HEIF_BRANDS:
            return ("HEIC/HEIF photo, and this Python has no HEIC decoder: pip install pillow-heif (our "
                    "install.py adds it to the WebUI), or export the photo as JPEG")
        if brand in _AVIF_BRANDS:
            return ("AVIF image, and this Python has no AVIF decoder: pip install pillow-avif-plugin (the WebUI "
                    "ships it), or export the image as JPEG")
        return "not an image (format not recognised)"
    if "truncated" in msg.lower():
        return f"truncated file ({msg})"
    return f"unreadable or corrupt ({type(exc).__name__}: {msg})"


def decode(path: Path, max_pixels: float, min_short: Union[int, Callable[[int, int], int]] = 0) -> Decoded:
    """Decode the first frame, apply EXIF orientation, convert to 8-bit RGB (+ alpha when present).

    ``min_short``: the decoded short side may be reduced down to this (JPEG draft mode); 0 = full size.
    A callable gets the stored (width, height) and returns it.
    """
    with pixel_limit(max_pixels):
        return _decode(path, max_pixels, min_short)


def _decode(path: Path, max_pixels: float, min_short) -> Decoded:
    w_h = header(path, max_pixels)
    if callable(min_short):
        min_short = min_short(w_h[0], w_h[1])
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise BadImage(_bomb_reason(exc, max_pixels)) from None
    except Exception as exc:  # noqa: BLE001
        raise BadImage(_reason(exc, path)) from None
    notes: list[str] = []
    try:
        with im:
            fmt = im.format or ""
            frames = getattr(im, "n_frames", 1)
            if getattr(im, "is_animated", False) and frames > 1:
                notes.append(f"animated ({frames} frames): first frame used")
                im.seek(0)
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            w0, h0 = im.size
            if min_short and fmt == "JPEG" and min(w0, h0) > 2 * min_short:
                k = min_short / min(w0, h0)
                im.draft(im.mode, (max(1, int(w0 * k)), max(1, int(h0 * k))))
            sixteen = any(";16" in str(t[3]) for t in (im.tile or []) if len(t) > 3)
            im.load()
            scale = im.size[0] / w0
            if orientation != 1:
                im = ImageOps.exif_transpose(im)
                notes.append(f"EXIF orientation {orientation} applied")
            elif (im.info.get("original_orientation") or 1) != 1:  # HEIF: turned by the decoder itself
                notes.append(f"orientation {im.info['original_orientation']} applied")
            rgb, alpha = _to_rgb(im, notes, sixteen)
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(_bomb_reason(exc, max_pixels)) from None
    except Exception as exc:  # noqa: BLE001 - truncated data, broken streams, bad CRCs…
        raise BadImage(_reason(exc)) from None
    size = (w0, h0) if orientation not in (5, 6, 7, 8) else (h0, w0)
    return Decoded(rgb, alpha, size, scale, notes, fmt)


def thumbnail_path(path: Path, cache: Path) -> Path:
    """Where ``browser_view`` keeps ``path``'s thumbnail: named by the file's path, size and time, so an edited
    or replaced photo gets a new one."""
    from ..workspace import file_version_key

    return Path(cache) / f"{path.stem[:60]}-{file_version_key(path)[:12]}.jpg"


def browser_view(path: Path, cache: Path, max_side: int = 512, max_pixels: Optional[float] = None) -> Path:
    """``path`` itself when every browser shows its format, else a JPEG thumbnail of it in ``cache`` (HEIC and
    TIFF photos in the tab's gallery), made once per file version, upright, written atomically. A file that
    does not decode is returned as it is (the gallery shows it broken; the import report says why).
    ``max_pixels``: the decompression-bomb guard, by default the import step's (``PrepareConfig``)."""
    if max_pixels is None:
        from .config import PrepareConfig

        max_pixels = PrepareConfig().max_megapixels * 1e6
    path = Path(path)
    if path.suffix.lower() in BROWSER_EXTS:
        return path
    thumb = thumbnail_path(path, cache)
    if thumb.is_file():
        return thumb
    try:
        img = decode(path, max_pixels, min_short=max_side).rgb
    except BadImage:
        return path
    img.thumbnail((max_side, max_side), Image.LANCZOS)
    thumb.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(thumb) as tmp:
        img.save(tmp, format="JPEG", quality=88)
    return thumb


def _to_rgb(im: Image.Image, notes: list[str], sixteen: bool) -> tuple[Image.Image, Optional[Image.Image]]:
    mode = im.mode
    alpha = None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max() if arr.size else 0
        if mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif top > 255:
            arr = arr / (257.0 if top <= 65535 else top / 255.0)
        notes.append(f"{'32-bit float' if mode == 'F' else '16-bit'} grayscale converted to 8-bit")
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB"), None
    if sixteen:
        notes.append("16-bit converted to 8-bit")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        notes.append("palette converted to RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        a = im.getchannel("A")
        if a.getextrema()[0] < 255:
            alpha = a
            notes.append("transparency kept as the mask")
        return im.convert("RGB"), alpha
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode not in ("RGB", "L", "1"):
        notes.append(f"{mode} converted to RGB")
    return im.convert("RGB"), None


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: robust to resizing and recompression, cheap to compare."""
    g = np.asarray(image.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


# --------------------------------------------------------------------------------------------- zips

@dataclass
class ZipLimits:
    """Zip-bomb guards: total bytes out, per-entry compression ratio, number of entries."""

    max_total_bytes: int = 8 << 30
    max_ratio: float = 200.0
    max_entries: int = 50_000


def _zip_entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's name; names stored in UTF-8 without the UTF-8 flag (common) are recovered."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name


def unsafe_member(name: str) -> str:
    """Why an archive member's path is refused ("" when it is safe to extract)."""
    n = name.replace("\\", "/")
    if n.startswith("/") or (len(n) > 1 and n[1] == ":"):
        return "absolute path"
    if any(part == ".." for part in PurePosixPath(n).parts):
        return "path leaves the archive (../)"
    return ""


def extract_zip(archive: Path, dest: Path, limits: ZipLimits = ZipLimits()) -> list[dict]:
    """Extract the safe members of ``archive`` into ``dest``; one ``{"file", "status", "reason"}`` per
    refused member. The header's sizes are not trusted: copying stops at the declared size."""
    rejected: list[dict] = []
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        from ..errors import UserError

        raise UserError(f"{archive.name} is not a readable zip archive ({exc})", "check the file") from None
    total = 0
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_entries:
            from ..errors import UserError

            raise UserError(f"{archive.name} has {len(infos)} entries (limit {limits.max_entries}): refused as a "
                            f"possible zip bomb", "unpack it yourself and import the folder")
        for info in infos:
            name = _zip_entry_name(info)
            shown = f"{display_name(archive.name)}/{display_name(name)}"
            why = unsafe_member(name)
            if not why and stat.S_ISLNK(info.external_attr >> 16):
                why = "symbolic link"
            ratio = info.file_size / max(info.compress_size, 1)
            if not why and info.file_size > (1 << 20) and ratio > limits.max_ratio:
                why = f"zip bomb: compression ratio {ratio:.0f}:1 is over {limits.max_ratio:.0f}:1"
            if not why and total + info.file_size > limits.max_total_bytes:
                why = f"zip bomb: more than {limits.max_total_bytes >> 20} MiB unpacked in total"
            if why:
                rejected.append({"file": shown, "status": "skipped", "reason": f"refused from the archive: {why}"})
                continue
            target = dest / PurePosixPath(name.replace("\\", "/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "wb") as out:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > info.file_size:
                        break
                    out.write(chunk)
            if written > info.file_size:
                target.unlink()
                rejected.append({"file": shown, "status": "skipped",
                                 "reason": "refused from the archive: zip bomb: more data than its header says"})
                continue
            total += written
    return rejected


def copy_into(sources: Iterable[Path], dest: Path, limits: ZipLimits = ZipLimits(),
              max_pixels: Optional[float] = None) -> dict:
    """Check uploaded files, folders or zips and copy the good ones into a project's ``source/`` (the tab and
    the API, through ``Service.add_images``).

    Every image is decoded now (the import step's checks: empty, not an image, truncated, a decompression
    bomb over ``max_pixels``, by default the import step's limit), so a bad file is refused by name with its
    reason instead of being counted as added and shown broken. An image whose bytes are already in
    ``dest`` (or earlier in this batch) is skipped and said, so adding the same photos twice makes no
    ``_2`` copies; a different file under a name already taken still gets a ``_2``, ``_3``… suffix rather
    than replacing one. A caption follows its image (skipped with it, renamed with it). Originals are only
    read; zips are extracted into a staging folder beside ``dest`` first, so a refused member never lands
    in ``source/``.

    Returns ``{"copied": [names], "rejected": [report lines], "duplicates": [report lines]}``; names are
    relative to ``dest``, report lines are ``{"file", "status", "reason"}`` (+ ``duplicate_of``).
    """
    import tempfile

    if max_pixels is None:
        from .config import PrepareConfig

        max_pixels = PrepareConfig().max_megapixels * 1e6
    dest.mkdir(parents=True, exist_ok=True)
    rejected: list[dict] = []
    found: list[tuple[str, str, Path]] = []   # (shown name, name relative to dest, file to copy)
    staging = Path(tempfile.mkdtemp(prefix=".lt-tmp-import-", dir=dest.parent))
    try:
        for i, src in enumerate(Path(s) for s in sources):
            if src.is_dir():
                found += [(display_name(f.relative_to(src).as_posix()), f.relative_to(src).as_posix(), f)
                          for f in list_files(src)]
            elif src.suffix.lower() == ".zip" and src.is_file():
                out = staging / str(i)
                rejected += extract_zip(src, out, limits)
                for f in list_files(out):
                    rel = f.relative_to(out).as_posix()
                    found.append((f"{display_name(src.name)}/{display_name(rel)}", rel, f))
            elif src.is_file():
                found.append((display_name(src.name), src.name, src))
            else:
                rejected.append({"file": display_name(str(src)), "status": "skipped", "reason": "not found"})
        report = _import_found(found, dest, max_pixels)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report["rejected"] = rejected + report["rejected"]
    return report


def check_image(path: Path, max_pixels: float) -> str:
    """Why ``path`` cannot be imported ("" when it decodes): the import step's checks, run on arrival. The
    whole file is decoded (a JPEG at a reduced scale), so a truncated file is found now, not at preparation."""
    try:
        decode(path, max_pixels, min_short=64)
    except BadImage as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable ({exc})"
    return ""


def _import_found(found: list[tuple[str, str, Path]], dest: Path, max_pixels: float) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    copied: list[str] = []
    rejected: list[dict] = []
    duplicates: list[dict] = []
    images = [x for x in found if x[2].suffix.lower() in SOURCE_IMAGE_EXTS]
    with ThreadPoolExecutor(max_workers=max(1, min(len(images), os.cpu_count() or 1))) as pool:
        reasons = dict(zip((x[2] for x in images), pool.map(lambda x: check_image(x[2], max_pixels), images)))
    existing = _ExistingHashes(dest)
    batch: dict[str, str] = {}           # sha256 → shown name of the first file with these bytes
    placed: dict[str, Optional[str]] = {}  # image rel stem → its name in dest (None: not added)
    for shown, rel, path in found:
        suffix = path.suffix.lower()
        if suffix in CAPTION_EXTS:
            continue
        if suffix not in SOURCE_IMAGE_EXTS:
            reason = VIDEO_REASON if suffix in VIDEO_EXTS else "not an image, zip or caption file"
            rejected.append({"file": shown, "status": "skipped", "reason": reason})
            continue
        stem = PurePosixPath(rel).with_suffix("").as_posix()
        if reasons[path]:
            rejected.append({"file": shown, "status": "skipped", "reason": reasons[path]})
            placed[stem] = None
            continue
        digest = sha256_file(path)
        twin = None if digest in batch else existing.find(path, digest)
        if twin is not None or digest in batch:
            of = batch[digest] if twin is None else display_name(twin)
            where = f"{of} in this upload" if twin is None else f"{of}, already in the project"
            duplicates.append({"file": shown, "status": "duplicate", "duplicate_of": of,
                               "reason": f"exact duplicate of {where}: skipped"})
            placed[stem] = None
            continue
        batch[digest] = shown
        name = _copy_unique(path, dest / rel)
        placed[stem] = (PurePosixPath(rel).parent / name).as_posix()
        existing.add(dest / placed[stem], digest)
        copied.append(placed[stem])
    for shown, rel, path in found:  # captions last: each follows its image
        if path.suffix.lower() not in CAPTION_EXTS:
            continue
        stem = PurePosixPath(rel).with_suffix("").as_posix()
        target = dest / (PurePosixPath(placed[stem]).with_suffix(path.suffix).as_posix() if placed.get(stem) else rel)
        if target.is_file() and target.read_bytes() == path.read_bytes():
            duplicates.append({"file": shown, "status": "duplicate", "duplicate_of": rel,
                               "reason": "the same caption is already in the project: skipped"})
            continue
        if stem in placed and placed[stem] is None:
            rejected.append({"file": shown, "status": "skipped",
                             "reason": "caption of an image that was not added (see that image's line)"})
            continue
        name = _copy_unique(path, target)
        copied.append((PurePosixPath(target.relative_to(dest).as_posix()).parent / name).as_posix())
    return {"copied": [display_name(c) for c in copied], "rejected": rejected, "duplicates": duplicates}


class _ExistingHashes:
    """The images already in ``dest``, hashed only when a new file has the same size (exact duplicates do),
    so a batch costs one listing, not a read of every photo in the project."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.by_size: dict[int, list[Path]] = {}
        self.hashes: dict[Path, str] = {}
        for f in list_files(dest):
            if f.suffix.lower() in SOURCE_IMAGE_EXTS:
                self.by_size.setdefault(f.stat().st_size, []).append(f)

    def find(self, path: Path, digest: str) -> Optional[str]:
        for f in self.by_size.get(path.stat().st_size, []):
            if f not in self.hashes:
                self.hashes[f] = sha256_file(f)
            if self.hashes[f] == digest:
                return f.relative_to(self.dest).as_posix()
        return None

    def add(self, path: Path, digest: str) -> None:
        self.by_size.setdefault(path.stat().st_size, []).append(path)
        self.hashes[path] = digest


def _copy_unique(src: Path, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, suffix, n = target.stem, target.suffix, 2
    while target.exists():
        target = target.with_name(f"{stem}_{n}{suffix}")
        n += 1
    shutil.copy2(src, target)
    return target.name
