"""Step 2a, crop: box geometry (pure), the focal point without a mask, manual boxes, and the face crop
with OpenCV's bundled Haar cascade on a real photo shipped in scikit-image (``astronaut``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lora_trainer.errors import UserError
from lora_trainer.prepare import crop as C
from lora_trainer.prepare.config import PrepareConfig
from lora_trainer.prepare.pipeline import prepare_folder
from prepare_fixtures import needs_cv2, needs_skimage, photo


@pytest.mark.parametrize("w,h,cx,cy,side,expected", [
    (400, 300, 200, 150, 300, (50, 0, 350, 300)),     # centred
    (400, 300, 10, 150, 100, (0, 100, 100, 200)),     # slid inside on the left
    (400, 300, 395, 290, 100, (300, 200, 400, 300)),  # and at the bottom right
    (400, 300, 200, 150, 999, (50, 0, 350, 300)),     # never larger than the short side
])
def test_square_at(w, h, cx, cy, side, expected):
    assert C.square_at(w, h, cx, cy, side) == expected


def test_center_and_fit():
    assert C.center_box(3024, 4032) == (0, 504, 3024, 3528)
    assert C.fit_size(3024, 4032, 1024) == (768, 1024)
    assert C.fit_size(300, 200, 1024) == (300, 200) and C.fit_size(3000, 2000, 0) == (3000, 2000)


def test_subject_box_follows_the_mask_and_scales_it():
    mask = np.zeros((100, 200), np.float32)
    mask[40:60, 150:170] = 1  # a 20x20 subject right of centre, in a mask at half the image's scale
    box = C.subject_box(mask, 400, 200, margin=0.1, min_side=32)
    assert box == (296, 76, 344, 124)  # 40 px subject (x 300..340) + 10% each side, centred on (320, 100)
    big = C.subject_box(mask, 400, 200, margin=0.1, min_side=128)
    assert big == (256, 36, 384, 164)
    assert C.subject_box(np.zeros((10, 10)), 100, 100, 0.1, 10) is None


@needs_cv2
def test_focal_box_finds_the_busy_side():
    img = np.full((100, 400), 128.0, np.float32)
    img[::4, 300:380] = 255  # stripes far right: all the detail is there
    box = C.focal_box(img, 400, 100)
    assert box[1] == 0 and box[3] == 100 and box[0] >= 280 and box[2] >= 380
    flat = C.focal_box(np.full((100, 400), 7.0, np.float32), 400, 100)
    assert flat == C.center_box(400, 100)


def test_manual_boxes(tmp_path):
    f = tmp_path / "boxes.json"
    f.write_text(json.dumps({"a.jpg": [10, 20, 110, 220], "b": [0, 0, 1, 1]}), encoding="utf-8")
    boxes = C.load_boxes(str(f))
    assert C.manual_box(boxes, "sub/a.jpg", 300, 300) == (10, 20, 110, 220)
    assert C.manual_box(boxes, "b.png", 300, 300) is None  # degenerate box: ignored
    assert C.manual_box(boxes, "c.png", 300, 300) is None
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError):
        C.load_boxes(str(bad))
    with pytest.raises(UserError):
        C.load_boxes(str(tmp_path / "missing.json"))


def test_manual_crop_through_the_pipeline(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    arr = np.zeros((300, 400, 3), np.uint8)
    arr[100:200, 250:350] = (0, 200, 0)  # a green square the user boxes
    Image.fromarray(arr).save(src / "g.png")
    photo(400, 300).save(src / "other.png")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"g.png": [250, 100, 350, 200]}), encoding="utf-8")
    rep = prepare_folder(src, tmp_path / "out", PrepareConfig(crop="manual", boxes=str(boxes), size=64))
    by = {f["file"]: f for f in rep["files"]}
    assert by["g.png"]["crop"] == [250, 100, 350, 200]
    out = np.asarray(Image.open(tmp_path / "out" / "g.png"))
    assert (out[2:-2, 2:-2, 1] > 190).all()
    assert "no manual box for this file: centre crop" in by["other.png"]["notes"]


def test_crop_none_keeps_the_aspect_ratio(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    photo(1600, 900).save(src / "wide.jpg", quality=90)
    rep = prepare_folder(src, tmp_path / "out", PrepareConfig(crop="none", max_side=800))
    assert rep["files"][0]["out_size"] == [800, 450]
    assert Image.open(tmp_path / "out" / "wide.png").size == (800, 450)


def _astronaut_on_canvas():
    """The astronaut photo (her face at x 177..270, y 67..160) placed right of centre on a wide canvas,
    so a centre crop would cut the face off."""
    from skimage import data

    astro = Image.fromarray(data.astronaut())
    canvas = Image.new("RGB", (1400, 700), (90, 90, 90))
    canvas.paste(astro, (850, 150))
    return canvas, (850 + 177, 150 + 67, 93, 93)


@needs_cv2
@needs_skimage
def test_haar_cascade_finds_the_astronauts_face():
    canvas, (fx, fy, fw, fh) = _astronaut_on_canvas()
    faces = C.detect_faces(canvas)
    assert faces, "no face found"
    x, y, w, h = faces[0]
    assert abs(x + w / 2 - (fx + fw / 2)) < 15 and abs(y + h / 2 - (fy + fh / 2)) < 15 and 0.7 < w / fw < 1.4


@needs_cv2
@needs_skimage
def test_face_crop_frames_the_face_with_head_room(tmp_path):
    canvas, (fx, fy, fw, fh) = _astronaut_on_canvas()
    src = tmp_path / "src"
    src.mkdir()
    canvas.save(src / "astronaut.jpg", quality=95)
    rep = prepare_folder(src, tmp_path / "out", PrepareConfig(crop="face", size=256, face_scale=2.5,
                                                             head_room=0.5))
    l, t, r, b = rep["files"][0]["crop"]
    side = r - l
    assert b - t == side and 2.0 * fh < side < 3.0 * fh
    assert l < fx and r > fx + fw and t < fy and b > fy + fh            # the whole face is inside
    assert abs((l + r) / 2 - (fx + fw / 2)) < 15                        # centred on it
    assert 0.3 * fh < fy - t < 0.8 * fh                                 # with about half a face above
    centre = C.center_box(*canvas.size)
    assert centre[2] < fx + fw  # a centre crop would have cut the face


@needs_cv2
def test_face_crop_without_a_face_falls_back_to_centre(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    photo(400, 300).save(src / "noface.png")
    rep = prepare_folder(src, tmp_path / "out", PrepareConfig(crop="face", size=64))
    f = rep["files"][0]
    assert f["crop"] == list(C.center_box(400, 300))
    # a warning (counted, listed), not a quiet note: the crop did not do what was asked
    assert f["warnings"][0].startswith("no face found: centre crop") and rep["counts"]["warnings"] == 1


def test_host_focal_crop_mode_is_used_when_registered_and_refused_otherwise(tmp_path):
    import numpy as np
    from PIL import Image

    from lora_trainer.errors import UserError
    from lora_trainer.prepare import prepare_folder
    from lora_trainer.prepare.config import PrepareConfig
    from lora_trainer.prepare.crop import register_crop_mode, unregister_crop_mode

    src = tmp_path / "src"
    src.mkdir()
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, 250:] = 255  # the "focal point" is at the right edge
    Image.fromarray(arr).save(src / "wide.png")
    cfg = PrepareConfig(crop="focal", size=64, background="none")
    with pytest.raises(UserError, match="WebUI"):
        prepare_folder(src, tmp_path / "none", cfg)
    register_crop_mode("focal", lambda img: (img.width - img.height, 0, img.width, img.height))
    try:
        prepare_folder(src, tmp_path / "out", cfg)
    finally:
        unregister_crop_mode("focal")
    out = np.asarray(Image.open(next((tmp_path / "out").glob("wide*.png"))))
    assert out.shape[:2] == (64, 64) and out[:, -8:].mean() > 200  # the right-hand square was kept
