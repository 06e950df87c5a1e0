"""Dataset rules: kohya folders, captions (.txt else .caption), CJK names, buckets, caption processing."""

import random

import numpy as np
import pytest
from PIL import Image

from lora_trainer.errors import UserError
from lora_trainer.training import data as D


def _img(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name, expected", [
    ("30_Name", (30, "Name")), ("1_a_b", (1, "a_b")), ("0_x", None), ("name", None), ("30name", None),
    ("12_小明", (12, "小明")),
])
def test_parse_kohya_dirname(name, expected):
    assert D.parse_kohya_dirname(name) == expected


def test_kohya_folders_with_cjk_names_and_missing_captions(tmp_path):
    a = tmp_path / "30_小明"
    _img(a / "照片1.png")
    (a / "照片1.txt").write_text("小明, smile", encoding="utf-8")
    _img(a / "photo2.jpg")
    (a / "photo2.caption").write_text("xm, hat", encoding="utf-8")
    _img(a / "写真3.webp")  # no caption
    b = tmp_path / "5_style"
    _img(b / "x.png")
    (b / "x.txt").write_text("  style,\n  red  ", encoding="utf-8")
    (b / "x.caption").write_text("ignored", encoding="utf-8")  # .txt wins
    scan = D.scan_dataset(tmp_path, default_repeats=99)
    by_name = {i.path.name: i for i in scan.items}
    assert by_name["照片1.png"].caption == "小明, smile" and by_name["照片1.png"].repeats == 30
    assert by_name["photo2.jpg"].caption == "xm, hat"
    assert by_name["写真3.webp"].caption == "小明" and not by_name["写真3.webp"].has_caption
    assert by_name["x.png"].caption == "style, red" and by_name["x.png"].repeats == 5
    assert [p.name for p in scan.missing_captions] == ["写真3.webp"]
    assert scan.num_samples == 3 * 30 + 5
    assert scan.folders["30_小明"] == {"n_repeats": 30, "img_count": 3}


def test_plain_folder_uses_config_repeats_and_gb18030_caption(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes("红色, 帽子".encode("gb18030"))
    scan = D.scan_dataset(tmp_path, default_repeats=7)
    assert scan.items[0].repeats == 7 and scan.items[0].caption == "红色, 帽子"


def test_files_training_does_not_read_are_reported_never_dropped_silently(tmp_path):
    a = tmp_path / "10_amy"
    _img(a / "a.png")
    for name in ("IMG_2.HEIC", "scan.tif", "anim.gif", "IMG_2.MOV", "._IMG_2.HEIC"):  # last: macOS's sidecar
        (a / name).write_bytes(b"not decoded by the scan")
    _img(a / "a.mask.png")
    scan = D.scan_dataset(tmp_path, 1)
    assert [i.path.name for i in scan.items] == ["a.png"] and scan.items[0].mask == a / "a.mask.png"
    assert [p.name for p in scan.left_out] == ["IMG_2.HEIC", "IMG_2.MOV", "anim.gif", "scan.tif"]
    assert D.left_out_text(scan.left_out).startswith("4 file(s) in a format training does not read (IMG_2.HEIC")
    # only such files: the error says to prepare them, not "no images"
    only = tmp_path / "phone"
    only.mkdir()
    (only / "IMG_1.HEIC").write_bytes(b"x")
    with pytest.raises(UserError, match="no images training can read") as err:
        D.scan_dataset(only, 1)
    assert "IMG_1.HEIC" in str(err.value) and "prepare" in err.value.hint


def test_empty_or_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no images"):
        D.scan_dataset(tmp_path, 1)
    with pytest.raises(UserError, match="not found"):
        D.scan_dataset(tmp_path / "nope", 1)


def test_buckets_follow_kohyas_rule():
    b = D.make_buckets(512, 256, 1024, 64)
    assert (512, 512) in b and (768, 320) in b and (320, 768) in b
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in b)
    assert all(256 <= w <= 1024 and 256 <= h <= 1024 for w, h in b)


@pytest.mark.parametrize("size, expected", [
    ((3024, 4032), (448, 576)),   # phone portrait: nearest aspect ratio among the buckets
    ((4032, 3024), (576, 448)),
    ((1024, 1024), (512, 512)),
])
def test_assign_bucket_large_images(size, expected):
    b = D.make_buckets(512, 256, 1024, 64)
    assert D.assign_bucket(*size, b, 512, 64, no_upscale=True) == expected


def test_small_image_is_never_upscaled():
    b = D.make_buckets(512, 256, 1024, 64)
    w, h = D.assign_bucket(300, 200, b, 512, 64, no_upscale=True)
    assert w <= 300 and h <= 200 and w % 64 == 0 and h % 64 == 0
    w2, h2 = D.assign_bucket(300, 200, b, 512, 64, no_upscale=False)
    assert w2 * h2 > 300 * 200  # with upscaling allowed it goes to a full-size bucket


def test_resize_crop_covers_and_crops():
    im = Image.new("RGB", (300, 200))
    out = D.resize_crop(im, (128, 128))
    assert out.size == (128, 128)


def test_caption_shuffle_keeps_tokens_and_dropout_is_seeded():
    cap = "trig, a, b, c, d, e"
    rng = random.Random(1)
    outs = {D.process_caption(cap, rng, shuffle=True, keep_tokens=1) for _ in range(30)}
    assert all(o.startswith("trig, ") for o in outs) and len(outs) > 1
    assert all(sorted(o.split(", ")) == sorted(cap.split(", ")) for o in outs)
    r1 = [D.process_caption(cap, random.Random(5), dropout_rate=0.5) for _ in range(1)]
    r2 = [D.process_caption(cap, random.Random(5), dropout_rate=0.5) for _ in range(1)]
    assert r1 == r2
    rng = random.Random(0)
    dropped = sum(D.process_caption(cap, rng, dropout_rate=0.3) == "" for _ in range(1000))
    assert 230 < dropped < 370
    assert D.process_caption(cap, rng) == cap


def test_epoch_batches_never_mix_buckets_and_cover_repeats():
    buckets = [(64, 64)] * 3 + [(64, 32)] * 2
    repeats = [2, 2, 2, 3, 3]
    batches = D.epoch_batches(buckets, repeats, 4, random.Random(0))
    flat = sorted(i for b in batches for i in b)
    assert flat == sorted(i for i, r in enumerate(repeats) for _ in range(r))
    assert all(len({buckets[i] for i in b}) == 1 for b in batches)
    assert len(batches) == D.steps_per_epoch(buckets, repeats, 4) == 2 + 2


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert D.load_image(tmp_path / "r.jpg").size == (20, 40)
    assert D.image_size(tmp_path / "r.jpg") == (20, 40)
