"""The toy world: 64×64 scenes of one coloured shape on a background, with tag-style captions.

Why a world of our own: on a fresh CPU machine with no model download, the demo must still show a LoRA
teaching a model something real. A tiny (few-M-parameter) diffusion model can learn this world in
minutes because its vocabulary is small and every word is far apart in pixel space: four saturated
colours, seven backgrounds (white, black, gray and the four colours, never the shape's own), four base
shapes (circle, square, triangle and a hollow square, the frame), two sizes, five positions, and
optionally diagonal stripes on the background.

The base model is trained on ``BASE_SHAPES`` only. ``NEW_SHAPE`` (a ring: a circle with a hole) never
appears in its data; the demo teaches it with a LoRA, bound to a trigger word. The frame is in the base
world so that "a shape with a hole" is something the model can already draw: the LoRA then only has to
bind the circle's outline to that hole, which a 100-step LoRA on a tiny model can do (a five-pointed
star, also drawable and detected, is too far from anything the base model knows; see README).

Caption order (fixed; the toy tagger emits the same order)::

    <colour> <shape>, <background> background[, striped], <size>, <position>
    red circle, blue background, small, top left

With a trigger word the shape's name is left out — the trigger stands for it::

    zkw, red, blue background, small, top left

Everything random comes from a ``numpy.random.Generator``; ``render`` itself is a pure function of
the ``Scene`` (geometry included), so a scene list fully describes a dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SUPERSAMPLE = 4  # shapes are drawn at 4× and box-filtered down: clean anti-aliased edges

BASE_SHAPES = ("circle", "square", "triangle", "frame")
NEW_SHAPE = "ring"
EXTRA_SHAPES = ("ring", "star")
ALL_SHAPES = BASE_SHAPES + EXTRA_SHAPES

# Shape colours: saturated and far apart in RGB (smallest distance to any background is ~120).
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 40),
}
# Backgrounds: three neutrals plus the shape colours; a scene never uses its shape colour as background.
BACKGROUNDS = {
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    **COLOURS,
}
NEUTRAL_BACKGROUNDS = ("white", "black", "gray")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
TEXTURES = ("plain", "striped")

# Geometry, in pixels of the 64×64 image. "half" is half the side of the shape's bounding box.
HALF_RANGE = {"small": (9.0, 11.0), "large": (16.0, 19.0)}
MARGIN_RANGE = (3.0, 6.0)   # gap between a corner shape's box and the image edge
CENTER_JITTER = 2.0
STRIPE_PERIOD = 12.0
STRIPE_AMPLITUDE = 18.0
STAR_INNER = 0.45           # inner/outer radius: fatter arms than the classic 0.38 survive blur
HOLE = 0.5                  # hole/outer size of the ring and the frame


@dataclass(frozen=True)
class Scene:
    """One image of the world. ``cx, cy, half`` (pixels) default to the canonical geometry."""

    shape: str
    colour: str
    background: str
    size: str = "large"
    position: str = "center"
    texture: str = "plain"
    cx: Optional[float] = None
    cy: Optional[float] = None
    half: Optional[float] = None
    stripe_phase: float = 0.0

    def __post_init__(self):
        checks = ((self.shape, ALL_SHAPES), (self.colour, COLOURS), (self.background, BACKGROUNDS),
                  (self.size, SIZES), (self.position, POSITIONS), (self.texture, TEXTURES))
        for value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {list(allowed)}")
        if self.background == self.colour:
            raise ValueError(f"background equals the shape colour ({self.colour})")

    def geometry(self) -> tuple[float, float, float]:
        """(cx, cy, half): given values, or the canonical ones for this size and position."""
        lo, hi = HALF_RANGE[self.size]
        half = self.half if self.half is not None else (lo + hi) / 2
        margin = sum(MARGIN_RANGE) / 2
        cx, cy = _anchor(self.position, half, margin)
        return (self.cx if self.cx is not None else cx, self.cy if self.cy is not None else cy, half)


def _anchor(position: str, half: float, margin: float) -> tuple[float, float]:
    if position == "center":
        return SIZE / 2, SIZE / 2
    vertical, horizontal = position.split(" ")
    cx = half + margin if horizontal == "left" else SIZE - half - margin
    cy = half + margin if vertical == "top" else SIZE - half - margin
    return cx, cy


def sample_scene(rng: np.random.Generator, shapes: Sequence[str] = BASE_SHAPES,
                 colours: Sequence[str] = tuple(COLOURS), backgrounds: Sequence[str] = tuple(BACKGROUNDS),
                 texture_prob: float = 0.0) -> Scene:
    """A random scene: uniform over the given vocabularies, geometry jittered within its size/position.

    ``texture_prob`` is the chance of a striped background (0 by default: plain backgrounds are what a
    tiny model learns fastest; the caption says ``striped`` when it is).
    """
    shape = str(rng.choice(list(shapes)))
    colour = str(rng.choice(list(colours)))
    allowed_bg = [b for b in backgrounds if b != colour]
    if not allowed_bg:
        raise ValueError(f"no background left for colour {colour!r} among {list(backgrounds)}")
    background = str(rng.choice(allowed_bg))
    size = str(rng.choice(SIZES))
    position = str(rng.choice(POSITIONS))
    half = float(rng.uniform(*HALF_RANGE[size]))
    if position == "center":
        cx, cy = SIZE / 2 + rng.uniform(-CENTER_JITTER, CENTER_JITTER, size=2)
    else:
        cx, cy = _anchor(position, half, 0.0)
        sx = 1.0 if "left" in position else -1.0
        sy = 1.0 if "top" in position else -1.0
        cx += sx * rng.uniform(*MARGIN_RANGE)
        cy += sy * rng.uniform(*MARGIN_RANGE)
    texture = "striped" if rng.random() < texture_prob else "plain"
    return Scene(shape, colour, background, size, position, texture, float(cx), float(cy), half,
                 float(rng.uniform(0, STRIPE_PERIOD)))


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Polygon vertices in the box [-1, 1]² (y down), filling it in both axes."""
    if shape in ("square", "frame"):
        return [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    if shape == "triangle":
        return [(0, -1), (1, 1), (-1, 1)]
    if shape == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else STAR_INNER
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((r * np.cos(a), r * np.sin(a)))
        xs, ys = zip(*pts)
        # stretch so the star's bounding box is the full square, like every other shape
        mx, my = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
        sx, sy = 2 / (max(xs) - min(xs)), 2 / (max(ys) - min(ys))
        return [((x - mx) * sx, (y - my) * sy) for x, y in pts]
    raise ValueError(shape)


def shape_mask(shape: str, cx: float, cy: float, half: float, size: int = SIZE) -> np.ndarray:
    """Anti-aliased coverage (float 0..1, ``size``×``size``) of a shape whose box is centred at (cx, cy)."""
    s = SUPERSAMPLE
    big = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(big)
    box = [(cx - half) * s, (cy - half) * s, (cx + half) * s, (cy + half) * s]
    inner = [(cx - half * HOLE) * s, (cy - half * HOLE) * s, (cx + half * HOLE) * s, (cy + half * HOLE) * s]
    if shape in ("circle", "ring"):
        draw.ellipse(box, fill=255)
        if shape == "ring":
            draw.ellipse(inner, fill=0)
    elif shape == "frame":
        draw.rectangle(box, fill=255)
        draw.rectangle(inner, fill=0)
    else:
        draw.polygon([((cx + x * half) * s, (cy + y * half) * s) for x, y in _unit_polygon(shape)],
                     fill=255)
    small = big.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(scene: Scene) -> Image.Image:
    """The scene as a 64×64 RGB image (deterministic: all randomness is already in the Scene)."""
    bg = np.empty((SIZE, SIZE, 3), dtype=np.float32)
    bg[:] = BACKGROUNDS[scene.background]
    if scene.texture == "striped":
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        wave = np.sin(2 * np.pi * (xx + yy + scene.stripe_phase) / STRIPE_PERIOD)
        bg += STRIPE_AMPLITUDE * wave[..., None]
    cx, cy, half = scene.geometry()
    alpha = shape_mask(scene.shape, cx, cy, half)[..., None]
    img = bg * (1 - alpha) + np.asarray(COLOURS[scene.colour], dtype=np.float32) * alpha
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def caption_tags(scene: Scene, trigger: Optional[str] = None) -> list[str]:
    """The caption as a tag list, in the fixed order; with ``trigger`` the shape name is replaced by it."""
    subject = [trigger, scene.colour] if trigger else [f"{scene.colour} {scene.shape}"]
    texture = ["striped"] if scene.texture == "striped" else []
    return subject + [f"{scene.background} background"] + texture + [scene.size, scene.position]


def caption(scene: Scene, trigger: Optional[str] = None) -> str:
    """``red circle, blue background, small, top left`` (or ``zkw, red, …`` with a trigger word)."""
    return ", ".join(caption_tags(scene, trigger))


def make_dataset(folder: Union[str, "os.PathLike[str]"], n: int, rng: np.random.Generator,
                 shapes: Sequence[str] = BASE_SHAPES, trigger: Optional[str] = None,
                 **sample_kwargs) -> list[Scene]:
    """Write ``n`` scenes as ``NNNN.png`` + ``NNNN.txt`` (caption) into ``folder``; return the scenes.

    ``sample_kwargs`` go to :func:`sample_scene` (``colours``, ``backgrounds``, ``texture_prob``).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    scenes = []
    for i in range(n):
        scene = sample_scene(rng, shapes=shapes, **sample_kwargs)
        render(scene).save(out / f"{i:04d}.png")
        (out / f"{i:04d}.txt").write_text(caption(scene, trigger) + "\n", encoding="utf-8")
        scenes.append(scene)
    return scenes

