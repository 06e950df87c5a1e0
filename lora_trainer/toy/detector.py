"""A deterministic concept detector for the toy world: which shape, which colour, on what background.

It judges images a tiny diffusion model generates (blurry, noisy, imperfect), so it works with
quantities that blur does not change, and it learns nothing:

1. **Background** = per-channel median of the 2-pixel border (a shape never covers half of it), named
   after the nearest background colour. Stripes show as the stripe frequency along the border.
2. **Shape colour** = median of the pixels far from the background, named after the nearest shape colour.
   Each pixel's *coverage* is its position on the line from background to shape colour (0..1); the
   region is the largest connected blob of coverage > 0.5, widened by 3 pixels to keep its blurred rim.
3. **Shape** by template matching. Blur keeps a blob's total coverage (area) and centroid, so for each
   candidate shape the area gives its size and the centroid its place; the blur is read off the edge
   slope. Each candidate, rendered with exactly that geometry and blur, is compared with the coverage
   map, and the closest wins. A blurred square still matches a blurred
   square template better than any circle; a blob that matches nothing well is no shape at all
   (``shape=None``), so junk never counts as a ring.

``detect(img)`` returns a ``Detection``; ``matches(img, shape=, colour=)`` is the yes/no the
evaluations count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from .world import ALL_SHAPES, BACKGROUNDS, COLOURS, SIZE, STRIPE_PERIOD, shape_mask

MIN_AREA = 12.0           # coverage (pixels) below which there is no shape
MIN_CONTRAST = 45.0       # RGB distance a shape pixel needs from the background
STRIPE_AMPLITUDE = 5.0    # stripe-frequency amplitude along the border (grey levels) that means striped
SIZE_SPLIT = 13.5         # half-side (px) of the matched shape's box: small is 9–11, large 16–19
CENTER_RADIUS = 5.5       # |offset| (px) of the box centre from the image centre that still counts as center
MAX_BLUR = 3.0            # largest blur sigma (px) a template is given
MAX_ERROR = 0.25          # template error (squared coverage difference / area) above which: no shape


@dataclass
class Detection:
    """What the detector saw. ``shape``/``colour`` are None when no shape stands out from the background."""

    shape: Optional[str]
    colour: Optional[str]
    background: str
    confidence: float = 0.0
    size: Optional[str] = None
    position: Optional[str] = None
    texture: str = "plain"
    scores: dict = field(default_factory=dict)    # per-part confidences in [0.5, 1]: shape, colour, background
    features: dict = field(default_factory=dict)  # area, template errors, geometry: for debugging


def _as_array(img: Image.Image) -> np.ndarray:
    img = img.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def _nearest(colour: np.ndarray, palette: dict) -> tuple[str, float]:
    """Nearest palette name and a confidence in [0.5, 1] from the two nearest distances."""
    names = list(palette)
    d = np.array([np.linalg.norm(colour - np.asarray(palette[n], dtype=np.float32)) for n in names])
    order = np.argsort(d)
    d1, d2 = d[order[0]], d[order[1]]
    return names[order[0]], float(d2 / (d1 + d2 + 1e-6))


def _border(a: np.ndarray, width: int = 2) -> np.ndarray:
    rest = a.shape[2:]
    return np.concatenate([a[:width].reshape(-1, *rest), a[-width:].reshape(-1, *rest),
                           a[width:-width, :width].reshape(-1, *rest),
                           a[width:-width, -width:].reshape(-1, *rest)])


def _stripe_amplitude(a: np.ndarray) -> float:
    """Amplitude of the world's stripe frequency along the image edges (median of the four sides).

    Stripes run diagonally, so every edge sees the same period; a Fourier coefficient at that one
    frequency ignores pixel noise, and the median ignores a side a shape happens to touch.
    """
    grey = a.mean(axis=2)
    sides = [grey[:2].mean(0), grey[-2:].mean(0), grey[:, :2].mean(1), grey[:, -2:].mean(1)]
    wave = np.exp(-2j * np.pi * np.arange(SIZE) / STRIPE_PERIOD)
    return float(np.median([abs(np.dot(side - np.median(side), wave)) * 2 / SIZE for side in sides]))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected blob (a plain BFS: 64×64 is tiny)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: list = []
    for y0, x0 in np.argwhere(mask):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        comp, queue = [], deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask, dtype=bool)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        p = np.pad(out, 1)
        out = p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
    return out


def _gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with zero padding (outside the image there is no shape)."""
    if sigma < 0.3:
        return a
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(a, ((0, 0), (r, r)))
    a = sum(k[i] * p[:, i:i + a.shape[1]] for i in range(2 * r + 1))
    p = np.pad(a, ((r, r), (0, 0)))
    return sum(k[i] * p[i:i + a.shape[0]] for i in range(2 * r + 1))


@lru_cache(maxsize=None)
def _unit_moments(shape: str) -> tuple[float, float, float]:
    """(area, centroid x, centroid y) of a shape whose box has half-side 1 and is centred at 0."""
    half = 24.0
    m = shape_mask(shape, SIZE / 2, SIZE / 2, half).astype(np.float64)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5 - SIZE / 2
    area = m.sum()
    return area / half ** 2, (m * xx).sum() / area / half, (m * yy).sum() / area / half


def _edge_slope(cover: np.ndarray) -> float:
    """Median gradient of the coverage map where it crosses 0.5: steep for sharp edges, flat for blurred."""
    gy, gx = np.gradient(cover)
    edge = (cover > 0.3) & (cover < 0.7)
    return float(np.median(np.hypot(gx, gy)[edge])) if edge.sum() >= 4 else 0.5


@lru_cache(maxsize=None)
def _slope_table() -> tuple[np.ndarray, np.ndarray]:
    """Edge slope of a rendered circle blurred by each sigma: inverted to read an image's blur off its slope."""
    sigmas = np.linspace(0.0, MAX_BLUR, 13)
    base = shape_mask("circle", SIZE / 2, SIZE / 2, 16.0).astype(np.float64)
    slopes = np.array([_edge_slope(_gaussian(base, s)) for s in sigmas])
    return slopes[::-1], sigmas[::-1]  # increasing slope, for np.interp


def _match(cover: np.ndarray, shapes: Sequence[str]) -> tuple[dict, dict]:
    """Per candidate shape: the template error, and the geometry (cx, cy, half, blur) it was rendered with.

    The blur comes from the edge slope, once for all candidates: fitted per candidate, a blurrier circle
    would explain a blurred star as well as the star does.
    """
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    area = float(cover.sum())
    mx, my = (cover * xx).sum() / area, (cover * yy).sum() / area
    slopes, sigmas = _slope_table()
    blur = float(np.interp(_edge_slope(cover), slopes, sigmas))
    errors, geometry = {}, {}
    for shape in shapes:
        ua, ux, uy = _unit_moments(shape)
        half = float(np.sqrt(area / ua))
        cx, cy = mx - ux * half, my - uy * half
        template = _gaussian(shape_mask(shape, cx, cy, half).astype(np.float64), blur)
        errors[shape] = float(((cover - template) ** 2).sum() / area)
        geometry[shape] = (float(cx), float(cy), half, blur)
    return errors, geometry


def _size_position(cx: float, cy: float, half: float) -> tuple[str, str]:
    size = "large" if half >= SIZE_SPLIT else "small"
    dx, dy = cx - SIZE / 2, cy - SIZE / 2
    if max(abs(dx), abs(dy)) < CENTER_RADIUS:
        return size, "center"
    return size, ("top" if dy < 0 else "bottom") + " " + ("left" if dx < 0 else "right")


def detect(img: Image.Image, shapes: Sequence[str] = ALL_SHAPES) -> Detection:
    """Shape, colour, background (and size, position, texture) of a toy-world image of any size.

    ``shapes`` are the candidates (at least two; default: every shape the world can draw).
    """
    a = _as_array(img)
    bg = np.median(_border(a), axis=0)
    background, bg_conf = _nearest(bg, BACKGROUNDS)
    texture = "striped" if _stripe_amplitude(a) > STRIPE_AMPLITUDE else "plain"
    none = Detection(None, None, background, 0.0, texture=texture, scores={"background": bg_conf})

    dist = np.linalg.norm(a - bg, axis=2)
    far = dist > max(MIN_CONTRAST, 0.6 * float(np.percentile(dist, 99.5)))
    if far.sum() < MIN_AREA / 2:
        return none
    fg = np.median(a[far], axis=0)
    colour, colour_conf = _nearest(fg, COLOURS)
    axis = fg - bg
    coverage = np.clip(((a - bg) @ axis) / max(float(axis @ axis), 1e-6), 0.0, 1.0)
    blob = _largest_component(coverage > 0.5)
    cover = (coverage * _dilate(blob, 3)).astype(np.float64)
    if cover.sum() < MIN_AREA:
        return none
    errors, geometry = _match(cover, shapes)
    order = sorted(errors, key=errors.get)
    e1, e2 = errors[order[0]], errors[order[1]]
    feats = {"area": float(cover.sum()), "errors": errors, "geometry": geometry[order[0]]}
    if e1 > MAX_ERROR:
        none.features = feats
        return none
    shape, shape_conf = order[0], float(e2 / (e1 + e2 + 1e-9))
    cx, cy, half, _ = geometry[shape]
    size, position = _size_position(cx, cy, half)
    return Detection(shape, colour, background, min(shape_conf, colour_conf), size, position, texture,
                     {"shape": shape_conf, "colour": colour_conf, "background": bg_conf}, feats)


def matches(img: Image.Image, shape: Optional[str] = None, colour: Optional[str] = None,
            shapes: Sequence[str] = ALL_SHAPES) -> bool:
    """True when a shape is detected and it has the given shape and/or colour (None = any)."""
    d = detect(img, shapes)
    return d.shape is not None and (shape is None or d.shape == shape) and \
        (colour is None or d.colour == colour)
