"""The Tagger protocol: images in, tags with scores out.

Every tagger (the toy world's, WD14 ONNX, the WebUI's Deepbooru and CLIP interrogator through the host
adapter) implements it, so the preparation step, the tab, the API and the demo treat them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence, runtime_checkable

from PIL import Image


@dataclass
class TagResult:
    """Tags for one image, best first, each with a score in [0, 1]."""

    tags: list[tuple[str, float]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [t for t, _ in self.tags]


@runtime_checkable
class Tagger(Protocol):
    """Turns images into scored tags. ``name`` identifies it in configs and the UI."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(True, "") when ready; else (False, "what is missing and where to put it"). Never downloads."""
        ...

    def tag(self, images: Sequence[Image.Image], threshold: float = 0.35) -> list[TagResult]:
        """One TagResult per image, tags with score >= threshold, best first."""
        ...


def format_caption(tags: Iterable[str], trigger: str = "", exclude: Iterable[str] = (),
                   max_tags: int = 0, underscores_to_spaces: bool = True,
                   escape_parentheses: bool = True) -> str:
    """A caption line from tags: trigger word first, excluded tags dropped, duplicates removed.

    Parentheses are escaped because the WebUI parses ``(…)`` as emphasis.
    """
    excluded = {e.strip().lower() for e in exclude if e.strip()}
    out: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        t = tag.strip()
        if underscores_to_spaces and len(t) > 3:  # keep kaomoji such as ^_^ intact
            t = t.replace("_", " ")
        if not t or t.lower() in excluded or t.lower() in seen or (trigger and t == trigger):
            continue
        seen.add(t.lower())
        out.append(t)
    if max_tags > 0:
        out = out[:max_tags]
    if escape_parentheses:
        out = [t.replace("(", "\\(").replace(")", "\\)") for t in out]
    return ", ".join(([trigger] if trigger else []) + out)
