"""Step 1, import: a corpus of every bad kind gives one clear line per bad file, the good ones are
converted as they should be, the source folder is left byte-for-byte unchanged, and the batch reports
progress and can be cancelled."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from lora_trainer.errors import UserError
from lora_trainer.prepare.config import PrepareConfig
from lora_trainer.prepare.importer import ZipLimits, browser_view, copy_into, decode, extract_zip, unsafe_member
from lora_trainer.prepare.pipeline import prepare_folder
from prepare_fixtures import (BAD_EXPECTED, GOOD_EXPECTED, HAS_AVIF, HAS_HEIF, avif_image, bad_corpus, heic_photo,
                              jpeg_bytes, photo, snapshot)

# the corpus holds a 169 MP header on purpose: our guard refuses it and Pillow's warning never shows
pytestmark = pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    src = bad_corpus(tmp_path_factory.mktemp("src"))
    before = snapshot(src)
    dest = tmp_path_factory.mktemp("dest")
    events = []
    rep = prepare_folder(src, dest, PrepareConfig(size=256), progress=events.append)
    return src, before, dest, rep, events


def test_every_bad_file_has_one_clear_line_and_the_rest_proceed(corpus_run):
    _, _, _, rep, _ = corpus_run
    by_name = {}
    for f in rep["files"]:
        assert f["file"] not in by_name, f"two lines for {f['file']}"
        by_name[f["file"]] = f
    for name, (status, words) in BAD_EXPECTED.items():
        assert name in by_name, f"{name} missing from the report: {sorted(by_name)}"
        assert by_name[name]["status"] == status, by_name[name]
        assert words in by_name[name]["reason"], (name, by_name[name]["reason"])
    for name, words in GOOD_EXPECTED.items():
        f = by_name[name]
        assert f["status"] == "ok", f
        said = " | ".join(f["notes"] + f["warnings"])
        assert words in said, (name, said)
    assert rep["counts"]["ok"] == len(GOOD_EXPECTED)
    assert not any(f["status"] == "failed" for f in rep["files"])


def test_conversions_are_real(corpus_run):
    _, _, dest, rep, _ = corpus_run
    by_name = {f["file"]: f for f in rep["files"]}
    rot = by_name["rotated.jpg"]
    assert rot["size"] == [300, 400]  # EXIF 6: the 400x300 file is a portrait
    if HAS_HEIF:  # the same for an iPhone's HEIC (turned by the decoder, not twice)
        heic = by_name["IMG_0042.HEIC"]
        assert heic["size"] == [300, 400] and "EXIF orientation" not in " ".join(heic["notes"])
        with Image.open(dest / heic["output"]) as im:
            assert im.mode == "RGB" and im.size == (256, 256) and np.asarray(im).std() > 5
    if HAS_AVIF:
        assert by_name["pixel.avif"]["size"] == [320, 240]
    for name in ("cmyk.jpg", "gray16.png", "palette.png", "anim.gif"):
        with Image.open(dest / by_name[name]["output"]) as im:
            assert im.mode == "RGB" and im.size == (256, 256)
            arr = np.asarray(im)
            assert arr.std() > 5, f"{name} came out flat"  # 16-bit scaled, not clipped to white
    # transparency becomes the mask, and the cut-out goes over the white fill
    alpha = by_name["alpha.png"]
    with Image.open(dest / alpha["mask"]) as m:
        m = np.asarray(m)
    assert m[128, 128] == 255 and m[2, 2] == 0
    with Image.open(dest / alpha["output"]) as im:
        assert tuple(np.asarray(im)[2, 2]) == (255, 255, 255)


def test_report_is_utf8_with_unescaped_names(corpus_run):
    _, _, dest, _, _ = corpus_run
    raw = (dest / "report.json").read_bytes()
    text = raw.decode("utf-8")
    assert "写真 ねこ.jpg" in text and "\\u" not in text
    data = json.loads(text)
    assert data["counts"]["files"] == len(data["files"])
    outputs = {f["file"]: f.get("output") for f in data["files"]}
    assert (dest / outputs["写真 ねこ.jpg"]).is_file()
    assert (dest / outputs["caf\ufffd.jpg"]).is_file()


def test_source_folder_is_unchanged(corpus_run):
    src, before, _, _, _ = corpus_run
    assert snapshot(src) == before


def test_previews_and_progress(corpus_run):
    _, _, dest, rep, events = corpus_run
    ok = [f for f in rep["files"] if f["status"] == "ok"]
    for f in ok:
        assert (dest / f["preview_before"]).is_file() and (dest / f["preview_after"]).is_file()
    steps = [e for e in events if e.phase == "process"]
    # images reached in the process phase: the good ones plus those only the full decode found bad
    assert steps[-1].step == steps[-1].total and len(steps) == steps[-1].total >= len(ok)
    assert sorted(e.step for e in steps) == list(range(1, len(steps) + 1))


def test_cancel_marks_the_rest_and_still_writes_the_report(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        photo(200, 150, i).save(src / f"p{i}.jpg")
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    rep = prepare_folder(src, tmp_path / "out", PrepareConfig(size=128, workers=1), should_stop=stop)
    st = [f["status"] for f in rep["files"]]
    assert st[:2] == ["ok", "ok"] and set(st[2:]) == {"cancelled"}
    assert rep["cancelled"] and json.loads((tmp_path / "out" / "report.json").read_text("utf-8"))["cancelled"]


def test_zip_member_paths_and_bombs(tmp_path):
    assert unsafe_member("../x.jpg") and unsafe_member("a/../../x.jpg") and unsafe_member("/etc/x")
    assert unsafe_member("C:\\x.jpg") and unsafe_member("..\\x.jpg") and not unsafe_member("a/b.jpg")
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok/p.jpg", jpeg_bytes(photo(64, 64)))
        zf.writestr("../../escape.jpg", b"x")
        zf.writestr("zeros.bin", b"\0" * (8 << 20))
        zf.writestr("fine.bin", b"abc" * 1000)
    out = tmp_path / "out"
    out.mkdir()
    rejected = extract_zip(z, out, ZipLimits(max_total_bytes=1 << 20))
    reasons = {r["file"]: r["reason"] for r in rejected}
    assert set(reasons) == {"a.zip/../../escape.jpg", "a.zip/zeros.bin"}
    assert "ratio" in reasons["a.zip/zeros.bin"]
    assert (out / "ok" / "p.jpg").is_file() and not (tmp_path / "escape.jpg").exists()
    # the total-size guard, on an entry that compresses badly
    rejected = extract_zip(z, tmp_path / "out2", ZipLimits(max_total_bytes=100, max_ratio=1e9))
    assert any("in total" in r["reason"] for r in rejected)


def test_copy_into_project_source_keeps_both_names(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    photo(64, 64, 1).save(a / "x.jpg")
    photo(64, 64, 2).save(b / "x.jpg")
    dest = tmp_path / "project" / "source"
    r1 = copy_into([a], dest)
    r2 = copy_into([b / "x.jpg"], dest)
    assert r1["copied"] == ["x.jpg"] and r2["copied"] == ["x_2.jpg"]
    assert sorted(p.name for p in dest.iterdir()) == ["x.jpg", "x_2.jpg"]


def test_copy_into_checks_zip_members_before_they_land_and_captions_follow_their_image(tmp_path):
    """A zip's bad member is refused by its archive name and never reaches ``source/``; a caption is renamed
    with its image (a different photo under a taken name) and skipped with a duplicate image."""
    import io

    dest = tmp_path / "project" / "source"
    up = tmp_path / "up"
    up.mkdir()
    photo(64, 64, 1).save(up / "x.jpg")
    assert copy_into([up / "x.jpg"], dest)["copied"] == ["x.jpg"]
    buf = io.BytesIO()
    photo(64, 64, 2).save(buf, format="JPEG")
    z = tmp_path / "batch.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("x.jpg", buf.getvalue())                                # another photo, same name
        zf.writestr("x.txt", "zkw, red")
        zf.writestr("cut.jpg", buf.getvalue()[:200])
        zf.writestr("same.jpg", (up / "x.jpg").read_bytes())                # the project's x.jpg again
        zf.writestr("same.txt", "zkw")
    rep = copy_into([z], dest)
    assert rep["copied"] == ["x_2.jpg", "x_2.txt"], rep
    assert [(r["file"], r["reason"].split(" (")[0]) for r in rep["rejected"]] == [
        ("batch.zip/cut.jpg", "truncated file"), ("batch.zip/same.txt", "caption of an image that was not added")]
    assert [(d["file"], d["duplicate_of"]) for d in rep["duplicates"]] == [("batch.zip/same.jpg", "x.jpg")]
    assert sorted(p.name for p in dest.iterdir()) == ["x.jpg", "x_2.jpg", "x_2.txt"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["source"]      # the staging folder is gone


def test_decode_uses_a_reduced_jpeg_scale_and_keeps_original_geometry(tmp_path):
    p = tmp_path / "big.jpg"
    photo(2400, 1800, 3).save(p, quality=90)
    d = decode(p, 1e9, min_short=256)
    assert d.size == (2400, 1800) and d.scale < 1 and min(d.rgb.size) >= 256
    full = decode(p, 1e9)
    assert full.scale == 1 and full.rgb.size == (2400, 1800)


def test_output_inside_source_and_missing_input_are_user_errors(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(UserError, match="inside the input"):
        prepare_folder(tmp_path / "src", tmp_path / "src" / "out")
    with pytest.raises(UserError, match="not found"):
        prepare_folder(tmp_path / "nope", tmp_path / "out")


def test_upscale_beyond_the_limit_is_reported(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    photo(200, 160, 1).save(src / "tiny.png")
    rep = prepare_folder(src, tmp_path / "out", PrepareConfig(size=512, max_upscale=2.0))
    f = rep["files"][0]
    assert f["status"] == "ok" and f["upscale"] == pytest.approx(3.2)
    assert any("upscaled x3.20" in w for w in f["warnings"]) and any("small" in w for w in f["warnings"])


@pytest.mark.skipif(not HAS_HEIF, reason="pillow-heif not installed (both CI profiles have it)")
def test_without_a_decoder_a_phone_format_says_what_to_install(tmp_path):
    """HEIC and AVIF files in a Python that cannot decode them: each reason names the package to install,
    instead of "not an image". Checked in a child Python where the two plugins cannot be imported."""
    import subprocess
    import sys

    heic_photo(tmp_path / "a.heic", 64, 48, 1)
    files = [tmp_path / "a.heic"]
    if HAS_AVIF:
        files.append(avif_image(tmp_path / "b.avif", 64, 48, 2))
    code = (
        "import sys\n"
        "sys.modules['pillow_heif'] = None; sys.modules['pillow_avif'] = None\n"
        "from pathlib import Path\n"
        "from lora_trainer.prepare.importer import BadImage, decode, extra_decoders\n"
        "assert extra_decoders() == frozenset()\n"
        "for f in sys.argv[1:]:\n"
        "    try:\n"
        "        decode(Path(f), 1e9)\n"
        "        print('decoded')\n"
        "    except BadImage as exc:\n"
        "        print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "pillow-heif" in lines[0] and "HEIC" in lines[0]
    if HAS_AVIF:
        assert "pillow-avif-plugin" in lines[1] and "AVIF" in lines[1]
    # with the decoders, the same files decode
    assert decode(files[0], 1e9).size == (64, 48)


@pytest.mark.skipif(not HAS_HEIF, reason="pillow-heif not installed (both CI profiles have it)")
def test_browser_view_gives_heic_a_jpeg_thumbnail_once_and_leaves_web_formats_alone(tmp_path):
    src = heic_photo(tmp_path / "IMG_1.HEIC", 1200, 900, 3, orientation=6)
    cache = tmp_path / "thumbs"
    thumb = browser_view(src, cache)
    assert thumb.parent == cache and thumb.suffix == ".jpg"
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.size == (384, 512)  # upright, longest side 512
    mtime = thumb.stat().st_mtime_ns
    assert browser_view(src, cache) == thumb and thumb.stat().st_mtime_ns == mtime  # made once
    png = tmp_path / "x.png"
    photo(32, 32, 1).save(png)
    assert browser_view(png, cache) == png
    bad = tmp_path / "broken.heic"
    bad.write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    assert browser_view(bad, cache) == bad  # not decodable: shown as it is, the report says why
    assert sorted(p.name for p in cache.iterdir()) == [thumb.name]
