"""Assemble README.md from docs/sections/*.md (run: python docs/build_readme.py).

The options table is regenerated from TrainConfig, so the README never drifts from the code
(tests/test_readme.py checks it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["intro", "core", "prepare", "tags", "training", "tab", "webui", "api", "toy", "hosts"]


def build() -> str:
    sys.path.insert(0, str(ROOT))
    from lora_trainer.config import TrainConfig, markdown_table

    parts = []
    for name in ORDER:
        p = ROOT / "docs" / "sections" / f"{name}.md"
        if p.is_file():
            parts.append(p.read_text(encoding="utf-8").strip())
    text = "\n\n".join(parts) + "\n"
    start = text.index("| option | default | what it does |")
    end = text.index("\n\n", start)
    return text[:start] + markdown_table(TrainConfig) + text[end:]


if __name__ == "__main__":
    (ROOT / "README.md").write_text(build(), encoding="utf-8")
    print("README.md written")
