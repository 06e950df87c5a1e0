"""The toy world, its concept detector and the toy tagger, on rendered ground truth.

The detector's acceptance figure (issue 12): >= 95% shape AND colour right on 500 ground-truth images,
base shapes and the new shape mixed; also on degraded copies (Gaussian blur radius 1, noise σ = 10/255).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lora_trainer.tagging.base import Tagger, format_caption
from lora_trainer.toy import world as W
from lora_trainer.toy.detector import detect, matches
from lora_trainer.toy.tagger import ToyTagger

EVAL_SHAPES = W.BASE_SHAPES + (W.NEW_SHAPE,)


def degrade(img: Image.Image, rng: np.random.Generator, radius: float = 1.0, sigma: float = 10.0):
    a = np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    a = a + rng.normal(0.0, sigma, a.shape)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def ground_truth():
    rng = np.random.default_rng(1234)
    scenes = [W.sample_scene(rng, shapes=EVAL_SHAPES, texture_prob=0.2) for _ in range(500)]
    return scenes, [W.render(s) for s in scenes]


# ---------------------------------------------------------------- world

def test_same_seed_same_world():
    a = [W.sample_scene(np.random.default_rng(7)) for _ in range(3)]
    b = [W.sample_scene(np.random.default_rng(7)) for _ in range(3)]
    assert a == b
    assert np.array_equal(np.asarray(W.render(a[0])), np.asarray(W.render(b[0])))
    c = W.sample_scene(np.random.default_rng(8))
    assert c != a[0]


def test_sampling_respects_vocabulary():
    rng = np.random.default_rng(0)
    scenes = [W.sample_scene(rng) for _ in range(400)]
    assert {s.shape for s in scenes} == set(W.BASE_SHAPES)  # the new shape never in base data
    assert {s.colour for s in scenes} == set(W.COLOURS)
    assert {s.background for s in scenes} == set(W.BACKGROUNDS)
    assert {s.position for s in scenes} == set(W.POSITIONS) and {s.size for s in scenes} == set(W.SIZES)
    assert all(s.background != s.colour for s in scenes)
    assert all(s.texture == "plain" for s in scenes)
    for s in scenes:  # every shape stays inside the image with a margin
        cx, cy, half = s.geometry()
        assert 2.5 <= cx - half and cx + half <= W.SIZE - 2.5 and 2.5 <= cy - half and cy + half <= W.SIZE - 2.5


def test_caption_order_and_trigger():
    s = W.Scene("circle", "red", "blue", "small", "top left")
    assert W.caption(s) == "red circle, blue background, small, top left"
    star = W.Scene("star", "yellow", "gray", "large", "center", texture="striped")
    assert W.caption(star) == "yellow star, gray background, striped, large, center"
    assert W.caption(star, trigger="zkw") == "zkw, yellow, gray background, striped, large, center"


def test_scene_rejects_unknown_words_and_same_colour_background():
    with pytest.raises(ValueError):
        W.Scene("hexagon", "red", "white")
    with pytest.raises(ValueError):
        W.Scene("circle", "red", "red")


def test_render_pixels():
    img = np.asarray(W.render(W.Scene("circle", "red", "white", "large", "center")))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[32, 32]) == W.COLOURS["red"] and tuple(img[0, 0]) == W.BACKGROUNDS["white"]
    ring = np.asarray(W.render(W.Scene("ring", "blue", "black", "large", "center")))
    assert tuple(ring[32, 32]) == W.BACKGROUNDS["black"] and tuple(ring[32, 32 + 13]) == W.COLOURS["blue"]
    frame = np.asarray(W.render(W.Scene("frame", "yellow", "gray", "large", "center")))
    assert tuple(frame[32, 32]) == W.BACKGROUNDS["gray"] and tuple(frame[32, 32 + 13]) == W.COLOURS["yellow"]
    # the frame's corners are filled, the ring's are not: the frame is a hollow square, the ring a hollow circle
    assert tuple(frame[32 - 16, 32 - 16]) == W.COLOURS["yellow"] and tuple(ring[32 - 16, 32 - 16]) == W.BACKGROUNDS["black"]
    tri = np.asarray(W.render(W.Scene("triangle", "green", "white", "large", "center")))
    top, bottom = (tri[16:20] != W.BACKGROUNDS["white"]).any(2).sum(), (tri[44:48] != 240).any(2).sum()
    assert top < bottom / 3  # apex up
    striped = np.asarray(W.render(W.Scene("square", "red", "gray", "small", "center", texture="striped")))
    assert striped[:4, :].std() > 8 and img[:4, :].std() == 0


def test_make_dataset_writes_images_and_captions(tmp_path):
    scenes = W.make_dataset(tmp_path / "new", 6, np.random.default_rng(3), shapes=(W.NEW_SHAPE,),
                            trigger="zkw")
    names = sorted(p.name for p in (tmp_path / "new").iterdir())
    assert names == [f"{i:04d}.{ext}" for i in range(6) for ext in ("png", "txt")]
    for i, s in enumerate(scenes):
        text = (tmp_path / "new" / f"{i:04d}.txt").read_text().strip()
        assert text == W.caption(s, "zkw") and text.startswith("zkw, ") and W.NEW_SHAPE not in text
        img = Image.open(tmp_path / "new" / f"{i:04d}.png")
        assert img.size == (64, 64) and img.mode == "RGB"
        assert np.array_equal(np.asarray(img), np.asarray(W.render(s)))


# ---------------------------------------------------------------- detector

def _accuracy(scenes, images):
    hits = [detect(img) for img in images]
    both = np.mean([d.shape == s.shape and d.colour == s.colour for d, s in zip(hits, scenes)])
    rest = np.mean([(d.background, d.size, d.position, d.texture) == (s.background, s.size, s.position,
                                                                        s.texture) for d, s in zip(hits, scenes)])
    return float(both), float(rest)


def test_detector_accuracy_on_500_ground_truth_images(ground_truth):
    scenes, images = ground_truth
    assert {s.shape for s in scenes} == set(EVAL_SHAPES)
    both, rest = _accuracy(scenes, images)
    assert both >= 0.95, f"shape+colour accuracy {both:.3f}"
    assert rest >= 0.95, f"background/size/position/texture accuracy {rest:.3f}"


def test_detector_accuracy_on_degraded_images(ground_truth):
    scenes, images = ground_truth
    rng = np.random.default_rng(99)
    both, rest = _accuracy(scenes, [degrade(img, rng) for img in images])
    assert both >= 0.95, f"shape+colour accuracy on blurred+noisy images {both:.3f}"
    assert rest >= 0.90, f"background/size/position/texture accuracy on degraded images {rest:.3f}"


def test_detector_rejects_images_without_a_shape():
    rng = np.random.default_rng(5)
    plain = Image.new("RGB", (64, 64), W.BACKGROUNDS["gray"])
    assert detect(plain).shape is None and detect(plain).background == "gray"
    noise = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(10)]
    assert all(detect(img).shape is None for img in noise)
    assert not matches(plain) and not matches(noise[0], colour="red")


def test_detector_reads_any_size_and_every_extra_shape():
    big = W.render(W.Scene("ring", "yellow", "blue", "large", "bottom right")).resize((256, 256))
    d = detect(big)
    assert (d.shape, d.colour, d.background, d.size, d.position) == ("ring", "yellow", "blue", "large",
                                                                      "bottom right")
    star = W.render(W.Scene("star", "red", "white", "small", "top left"))
    assert matches(star, shape="star", colour="red") and matches(star, shape="star")
    assert not matches(star, shape="circle") and not matches(star, colour="blue")
    # with only the base shapes as candidates a star fits none of them: no shape, not a forced guess
    assert detect(star, shapes=W.BASE_SHAPES).shape is None


def test_detector_confidence_is_lower_when_blurred():
    img = W.render(W.Scene("square", "green", "black", "small", "center"))
    sharp, soft = detect(img), detect(img.filter(ImageFilter.GaussianBlur(2.5)))
    assert 0.5 <= soft.scores["shape"] < sharp.scores["shape"] <= 1.0


# ---------------------------------------------------------------- tagger

def test_toy_tagger_implements_the_protocol():
    tagger = ToyTagger()
    assert isinstance(tagger, Tagger) and tagger.name == "toy" and tagger.available() == (True, "")


def test_tagging_recovers_the_captions(ground_truth):
    scenes, images = ground_truth
    results = ToyTagger().tag(images[:80], threshold=0.35)
    assert len(results) == 80
    same = [format_caption(r.names()) == W.caption(s) for r, s in zip(results, scenes)]
    assert np.mean(same) >= 0.95
    for r in results:  # best first = caption order
        scores = [score for _, score in r.tags]
        assert scores == sorted(scores, reverse=True) and all(0.35 <= x <= 1 for x in scores)


def test_tagging_with_trigger_reads_like_trigger_captions():
    rng = np.random.default_rng(11)
    scenes = [W.sample_scene(rng, shapes=(W.NEW_SHAPE,)) for _ in range(10)]
    tagger = ToyTagger(omit_shape_names=(W.NEW_SHAPE,))
    results = tagger.tag([W.render(s) for s in scenes])
    assert [format_caption(r.names(), trigger="zkw") for r in results] == [W.caption(s, "zkw") for s in scenes]


def test_tagging_threshold_filters():
    img = W.render(W.Scene("triangle", "blue", "white", "small", "bottom left"))
    assert ToyTagger().tag([img], threshold=1.01)[0].tags == []
    assert ToyTagger().tag([Image.new("RGB", (64, 64), (20, 20, 20))])[0].names() == ["black background"]
