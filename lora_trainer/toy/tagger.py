"""The toy world's tagger: the concept detector behind the project's ``Tagger`` protocol.

Deepbooru, CLIP and WD14 need model files a fresh machine lacks; this tagger needs nothing, so the
demo's auto-tag step is real. Its tags are the world's caption tags in the world's caption order
(``red circle, blue background, small, top left``), so auto-tagged images read exactly like the
training captions.

Scores: each tag's score is the detector's confidence in it, capped by the score of the tag before it.
So "best first" (the protocol) and "caption order" agree, and a threshold trims the caption from its end.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from PIL import Image

from ..tagging.base import TagResult
from .world import ALL_SHAPES


class ToyTagger:
    """Tags toy-world images. ``omit_shape_names``: shapes tagged by colour only (``red``, not ``red ring``).

    Use ``omit_shape_names=(NEW_SHAPE,)`` with a trigger word so the trigger, not the shape's name,
    carries the new concept — as in ``make_dataset(..., trigger=...)`` captions.
    """

    name = "toy"

    def __init__(self, omit_shape_names: Iterable[str] = (), shapes: Sequence[str] = ALL_SHAPES):
        self.omit_shape_names = frozenset(omit_shape_names)
        self.shapes = tuple(shapes)

    def available(self) -> tuple[bool, str]:
        return True, ""

    def tag_one(self, image: Image.Image) -> TagResult:
        from .detector import detect

        d = detect(image, self.shapes)
        scored: list[tuple[str, float]] = []
        if d.shape is not None:
            subject = d.colour if d.shape in self.omit_shape_names else f"{d.colour} {d.shape}"
            scored.append((subject, d.confidence))
        scored.append((f"{d.background} background", d.scores.get("background", 0.0)))
        if d.texture == "striped":
            scored.append(("striped", 0.9))  # a fixed score: the stripe test is far from noise either way
        if d.shape is not None:
            # size and position come from the same fitted template as the shape itself
            scored += [(d.size, d.scores["shape"]), (d.position, d.scores["shape"])]
        tags, cap = [], 1.0
        for tag, score in scored:
            cap = min(cap, round(float(score), 4))
            tags.append((tag, cap))
        return TagResult(tags)

    def tag(self, images: Sequence[Image.Image], threshold: float = 0.35) -> list[TagResult]:
        """One TagResult per image, tags with score >= threshold, in caption order (= best first)."""
        out = []
        for image in images:
            result = self.tag_one(image)
            out.append(TagResult([(t, s) for t, s in result.tags if s >= threshold]))
        return out
