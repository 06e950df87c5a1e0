"""The decompression-bomb guard is the user's ``max_megapixels``, not Pillow's own limit: above Pillow's
89.5/179 MP it still has effect, refusals quote the user's setting and the option to raise it, no raw
DecompressionBombWarning reaches stderr, and Pillow's global limit is left as it was (the host's)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.prepare.importer import BadImage, decode, header

REPO = Path(__file__).resolve().parents[1]
PILLOW_NUMBERS = ("178956970", "89478485")


def png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header says w×h (8-bit grey) with almost no pixel data: header checks see the real size
    without anybody allocating it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_limit_above_pillows_own_has_effect(tmp_path):
    big = png_header_only(tmp_path / "scan.png", 20000, 10000)  # 200 MP: over Pillow's 179 MP error limit
    assert header(big, 300e6) == (20000, 10000, "PNG")
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadImage) as e:
        header(big, 150e6)
    assert "200 MP is over the 150 MP limit" in str(e.value) and Image.MAX_IMAGE_PIXELS == before


def test_decoding_above_pillows_limit(tmp_path, monkeypatch):
    """Pillow's limit lowered to 1 MP stands in for its 89.5 MP so a real decode stays small: a 3 MP image
    (over twice Pillow's limit) decodes under a 4 MP setting, and Pillow's value is back afterwards."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    Image.new("RGB", (2000, 1500), (200, 10, 10)).save(tmp_path / "a.png")
    dec = decode(tmp_path / "a.png", 4e6)
    assert dec.rgb.size == (2000, 1500) and Image.MAX_IMAGE_PIXELS == 1_000_000


@pytest.mark.parametrize("w,h,shown", [(20000, 5000, "20000x5000 = 100 MP"), (20000, 10000, "200 MP")])
def test_refusals_quote_the_users_setting_and_warn_nothing(tmp_path, w, h, shown):
    f = png_header_only(tmp_path / "big.png", w, h)
    filters, before = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BadImage) as e:
            header(f, 50e6)
        with pytest.raises(BadImage) as e2:
            decode(f, 50e6)
    msg = str(e.value)
    assert shown in msg and "over the 50 MP limit" in msg and "--max-megapixels" in msg, msg
    assert str(e2.value) == msg
    assert not any(n in msg for n in PILLOW_NUMBERS), msg
    assert [str(w.message) for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []
    assert list(warnings.filters) == filters and Image.MAX_IMAGE_PIXELS == before


def test_threads_with_different_limits_leave_pillow_as_it_was(tmp_path):
    small = tmp_path / "s.png"
    Image.new("RGB", (64, 48)).save(small)
    big = png_header_only(tmp_path / "b.png", 12000, 10000)  # 120 MP
    before, filters, errors = Image.MAX_IMAGE_PIXELS, list(warnings.filters), []

    def work(limit):
        try:
            for _ in range(20):
                decode(small, limit)
                try:
                    header(big, limit)
                    ok = True
                except BadImage as exc:
                    ok = False
                    assert f"over the {limit / 1e6:g} MP limit" in str(exc), str(exc)
                assert ok == (limit >= 120e6)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lim,)) for lim in (50e6, 150e6, 300e6, 100e6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Image.MAX_IMAGE_PIXELS == before and list(warnings.filters) == filters


def test_prepare_reports_in_the_users_terms_and_stderr_has_no_pillow_warning(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    png_header_only(src / "huge.png", 20000, 5000)   # 100 MP: Pillow alone would only warn
    Image.new("RGB", (96, 96), (10, 120, 200)).save(src / "ok.png")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORA_TRAINER_LOG": str(tmp_path / "log.txt")}
    r = subprocess.run([sys.executable, "-m", "lora_trainer", "prepare", "--input", str(src), "--output-dir",
                        str(tmp_path / "out"), "--size", "64", "--max-megapixels", "50", "--no-previews",
                        "--workers", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "DecompressionBomb" not in r.stderr and "exceeds limit" not in r.stderr, r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    line = next(f for f in report["files"] if f["file"] == "huge.png")
    assert line["status"] == "skipped" and "over the 50 MP limit" in line["reason"]
    assert "--max-megapixels" in line["reason"]
