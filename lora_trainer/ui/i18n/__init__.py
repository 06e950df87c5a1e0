"""Translations of the tab's own strings, applied when the tab is built.

Why not ``localizations/zh_CN.json``: in WebUI 1.6 an extension's localization file *replaces* the user's
whole zh_CN pack (1.7+ merges it), so shipping one could wipe a user's translation. Instead the tab asks
``translator(lang)`` for every label, help line and message it creates: the language comes from the host
(``host_info["lang"]``, which the adapter takes from the WebUI's ``localization`` setting) or from
``python -m lora_trainer ui --lang zh_CN``. The user's own pack is never touched.

``Translator.missing`` records English strings that had no entry, so a test can require full coverage.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
LANGS = ("en", "zh_CN")


def resolve_lang(value: Optional[str]) -> str:
    """Map a WebUI localization name (``zh_CN``, ``zh-Hans (Stable)``, ``简体中文``…) or a flag to a
    language we ship; anything else is English."""
    v = (value or "").strip().lower().replace("-", "_")
    if not v or v in ("none", "en", "en_us", "english"):
        return "en"
    if v.startswith("zh") and not any(k in v for k in ("tw", "hk", "hant")) or "简体" in v or v == "chinese":
        return "zh_CN"
    return "en"


@lru_cache(maxsize=None)
def table(lang: str) -> dict:
    """The English → ``lang`` table (empty for English)."""
    path = HERE / f"{lang}.json"
    if lang == "en" or not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


class Translator:
    """``t("Run")`` → the translation, or the English text itself (recorded in ``missing``)."""

    def __init__(self, lang: Optional[str] = "en"):
        self.lang = resolve_lang(lang)
        self.table = table(self.lang)
        self.missing: set[str] = set()

    def __call__(self, text: str, **fmt) -> str:
        out = text
        if self.lang != "en" and text:
            out = self.table.get(text)
            if out is None:
                self.missing.add(text)
                out = text
        return out.format(**fmt) if fmt else out


def translator(lang: Optional[str] = None) -> Translator:
    return Translator(lang)
