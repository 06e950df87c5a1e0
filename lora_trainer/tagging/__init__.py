"""Step 3, auto-tagging: the Tagger protocol and the taggers that implement it."""

from .base import Tagger, TagResult, format_caption

__all__ = ["Tagger", "TagResult", "format_caption"]
