"""Auto-tagging a folder: the existing-caption policies (with backups), trigger first, exclusions and max
tags, progress and cancel; the tagger registry (unknown names, the host hook, fail-fast when a tagger is
unavailable); all on the toy world's real tagger and images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lora_trainer.errors import UserError
from lora_trainer.prepare.config import TagConfig
from lora_trainer.tagging.autotag import caption_for, tag_folder, tag_paths
from lora_trainer.tagging.base import TagResult
from lora_trainer.tagging.registry import (describe_taggers, get_tagger, register_tagger, tagger_names,
                                           unregister_tagger)


@pytest.fixture
def toy_folder(tmp_path):
    from lora_trainer.toy.world import Scene, render

    scenes = [Scene("circle", "red", "blue"), Scene("square", "green", "white", size="small",
                                                    position="top left")]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, s in enumerate(scenes):
        render(s).save(folder / f"img{i}.png")
    return folder


def test_toy_tagger_captions_a_folder(toy_folder):
    rep = tag_folder(toy_folder, TagConfig(tagger="toy", trigger="zkw"))
    assert rep["counts"] == {"tagged": 2}
    assert (toy_folder / "img0.txt").read_text("utf-8").strip() == "zkw, red circle, blue background, large, center"
    assert (toy_folder / "img1.txt").read_text("utf-8").strip() == \
        "zkw, green square, white background, small, top left"
    assert (toy_folder / "tag-report.json").is_file()


def test_tagging_skips_by_name_what_training_would_not_read(toy_folder, tmp_path):
    for name in ("IMG_9.HEIC", "anim.gif"):
        (toy_folder / name).write_bytes(b"a photo training leaves out")
    rep = tag_folder(toy_folder, TagConfig(tagger="toy"))
    assert rep["counts"] == {"tagged": 2, "skipped": 2}
    skipped = {f["file"]: f["reason"] for f in rep["files"] if f["status"] == "skipped"}
    assert set(skipped) == {"IMG_9.HEIC", "anim.gif"} and "prepare" in skipped["anim.gif"]
    assert not (toy_folder / "anim.txt").exists() and not (toy_folder / "IMG_9.txt").exists()
    only = tmp_path / "phone"
    only.mkdir()
    (only / "IMG_1.HEIC").write_bytes(b"x")
    with pytest.raises(UserError, match="no images training can read") as err:
        tag_folder(only, TagConfig(tagger="toy"))
    assert "IMG_1.HEIC" in str(err.value) and "prepare" in err.value.hint


def test_existing_caption_policies_and_backup(toy_folder):
    (toy_folder / "img0.txt").write_text("my own words, red circle\n", encoding="utf-8")
    rep = tag_folder(toy_folder, TagConfig(tagger="toy"))  # skip is the default
    assert [f["status"] for f in rep["files"]] == ["skipped", "tagged"] and rep["backup"] is None
    assert (toy_folder / "img0.txt").read_text("utf-8") == "my own words, red circle\n"

    rep = tag_folder(toy_folder, TagConfig(tagger="toy", existing="append", trigger="zkw"))
    assert (toy_folder / "img0.txt").read_text("utf-8").strip() == \
        "zkw, my own words, red circle, blue background, large, center"
    backup = rep["backup"]
    assert backup and open(f"{backup}/img0.txt", encoding="utf-8").read() == "my own words, red circle\n"

    tag_folder(toy_folder, TagConfig(tagger="toy", existing="overwrite"))
    assert (toy_folder / "img0.txt").read_text("utf-8").strip() == "red circle, blue background, large, center"


def test_caption_rules():
    res = TagResult([("long_hair", 0.9), ("solo", 0.8), ("star_(symbol)", 0.7), ("^_^", 0.6), ("zkw", 0.5)])
    cfg = TagConfig(trigger="zkw", exclude="solo, smile", max_tags=3)
    assert caption_for(res, cfg) == "zkw, long hair, star \\(symbol\\), ^_^"
    cfg = TagConfig(exclude="long hair", underscores_to_spaces=False, escape_parentheses=False)
    assert caption_for(res, cfg) == "solo, star_(symbol), ^_^, zkw"  # either spelling excludes
    assert caption_for(res, TagConfig(trigger="zkw", max_tags=1), existing="zkw, solo") == "zkw, solo, long hair"


def test_progress_and_cancel(toy_folder):
    events = []
    paths = sorted(toy_folder.glob("*.png"))
    rep = tag_paths(paths, get_tagger("toy"), TagConfig(batch_size=1), events.append, lambda: len(events) >= 1)
    assert [f["status"] for f in rep["files"]] == ["tagged", "cancelled"] and rep["cancelled"]
    assert events[0].phase == "tag" and (events[0].step, events[0].total) == (1, 2)
    assert not (toy_folder / "img1.txt").exists()


class _Broken:
    name = "broken"

    def available(self):
        return True, ""

    def tag(self, images, threshold=0.35):
        raise RuntimeError("model exploded")


class _Missing:
    name = "missing"

    def available(self):
        return False, "its weights are not downloaded"

    def tag(self, images, threshold=0.35):  # pragma: no cover - must never be reached
        raise AssertionError("tag() called on an unavailable tagger")


def test_registry_and_the_host_hook(toy_folder):
    assert tagger_names()[:1] == ["none"] and {"toy", "wd14"} <= set(tagger_names())
    assert get_tagger("none") is None
    with pytest.raises(UserError, match="unknown tagger 'deepbooru'"):
        get_tagger("deepbooru")
    register_tagger("missing", lambda cfg=None: _Missing())
    register_tagger("broken", lambda cfg=None: _Broken())
    try:
        names = {d["name"]: d for d in describe_taggers()}
        assert names["missing"]["available"] is False and "not downloaded" in names["missing"]["reason"]
        with pytest.raises(UserError, match="not available: its weights are not downloaded"):
            tag_folder(toy_folder, TagConfig(tagger="missing"))
        with pytest.raises(UserError, match="'broken' failed: RuntimeError: model exploded"):
            tag_folder(toy_folder, TagConfig(tagger="broken"))
    finally:
        unregister_tagger("missing")
        unregister_tagger("broken")
    assert "missing" not in tagger_names()
    with pytest.raises(ValueError):
        register_tagger("none", lambda cfg=None: _Missing())


def test_cut_outs_are_tagged_over_white(tmp_path):
    """An RGBA cut-out (fill alpha) is seen by the tagger over white, not over black."""
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (215, 40, 40, 255)  # an opaque red square; the rest transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    tag_folder(tmp_path, TagConfig(tagger="toy"))
    assert "white background" in (tmp_path / "cut.txt").read_text("utf-8")


def test_prepare_with_a_tagger_writes_captions(toy_folder, tmp_path):
    from lora_trainer.prepare.config import PrepareConfig
    from lora_trainer.prepare.pipeline import prepare_folder

    out = tmp_path / "out"
    rep = prepare_folder(toy_folder, out, PrepareConfig(size=64, tagger="toy", trigger="zkw"))
    assert rep["tagging"]["counts"] == {"tagged": 2}
    assert (out / "img0.txt").read_text("utf-8").startswith("zkw, red circle, blue background")
    assert all(f.get("caption") for f in rep["files"] if f["status"] == "ok")
    with pytest.raises(UserError, match="unknown tagger"):  # before any image is processed
        prepare_folder(toy_folder, tmp_path / "out2", PrepareConfig(size=64, tagger="nope"))
    assert not (tmp_path / "out2" / "img0.png").exists()
    # the tagger and trigger may come with the tagging options instead (the API's {"tag": {...}})
    rep = prepare_folder(toy_folder, tmp_path / "out3", PrepareConfig(size=64),
                         tag_cfg=TagConfig(tagger="toy", trigger="qqx"))
    assert rep["tagging"]["counts"] == {"tagged": 2}
    assert (tmp_path / "out3" / "img0.txt").read_text("utf-8").startswith("qqx, red circle")
    rep = prepare_folder(toy_folder, tmp_path / "out4", PrepareConfig(size=64, trigger="zkw"),
                         tag_cfg=TagConfig())
    assert "tagging" not in rep and not (tmp_path / "out4" / "img0.txt").exists()  # no tagger: no captions
