"""English tag → 简体中文, offline, from the project's own dictionary (``data/zh_CN.json``).

Our users read their tags in Chinese (they used to translate them in BooruDatasetTagManager). The editor
shows the translation beside each tag and searches in either language; an unknown tag shows the English
alone. A user dictionary (same format, ``{"english tag": "中文"}``) can be laid over the shipped one.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Optional

from ..errors import UserError
from . import ops

DICT_PATH = Path(__file__).parent / "data" / "zh_CN.json"
USER_DICT_ENV = "LORA_TRAINER_TAG_DICT"
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


class Translator:
    """Looks tags up by ``ops.norm`` form, so ``long_hair``, ``Long Hair`` and ``long hair`` agree."""

    def __init__(self, table: Mapping[str, str]):
        self.table = {ops.norm(k): v for k, v in table.items()}

    def __len__(self) -> int:
        return len(self.table)

    def zh(self, tag: str) -> Optional[str]:
        return self.table.get(ops.norm(tag))

    def label(self, tag: str, sep: str = " · ") -> str:
        """``"long hair · 长发"``; the English alone when the tag is unknown."""
        t = self.zh(tag)
        return f"{tag}{sep}{t}" if t else tag

    def matches(self, tag: str, query: str) -> bool:
        """``query`` is part of the tag (English, any spelling) or of its translation."""
        q = query.strip()
        if not q:
            return True
        if ops.norm(q) in ops.norm(tag):
            return True
        t = self.zh(tag)
        return bool(t and q in t)

    def search(self, query: str, tags: Iterable[str]) -> list[str]:
        return [t for t in tags if self.matches(t, query)]

    def english(self, query: str, limit: int = 20) -> list[str]:
        """Dictionary tags whose translation contains ``query`` (type 长发, get ``long hair``), exact first."""
        q = query.strip()
        if not q:
            return []
        hits = [k for k, v in self.table.items() if q in v]
        hits.sort(key=lambda k: (self.table[k] != q, len(self.table[k]), k))
        return hits[:limit]


def _read(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the tag dictionary {path}: {exc}",
                        'it must be a JSON object {"english tag": "中文"}') from None
    if not isinstance(data, dict):
        raise UserError(f"the tag dictionary {path} is not a JSON object", 'write {"english tag": "中文", …}')
    return {str(k): str(v) for k, v in data.items()}


@lru_cache(maxsize=4)
def _translator(user: str) -> Translator:
    table = _read(DICT_PATH)
    if user:
        table.update(_read(Path(user)))
    return Translator(table)


def get_translator(user_dict: str | os.PathLike | None = None) -> Translator:
    """The shipped dictionary, with ``user_dict`` (default ``$LORA_TRAINER_TAG_DICT``) laid over it."""
    user = user_dict if user_dict is not None else os.environ.get(USER_DICT_ENV) or ""
    return _translator(str(user))
