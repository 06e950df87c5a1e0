"""Assemble README.md from docs/sections/*.md (run: python docs/build_readme.py).

The options table is regenerated from TrainConfig, so the README never drifts from the code
(tests/test_readme.py checks it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["intro", "toy", "core", "prepare", "tags", "training", "webui", "api"]


def build() -> str:
    sys.path.insert(0, str(ROOT))
    from lora_trainer.config import TrainConfig, markdown_table

    # Sections link pictures as ../images/X (right from docs/sections/); the README sits at the top.
    parts = [(ROOT / "docs" / "sections" / f"{name}.md").read_text(encoding="utf-8").strip()
             .replace("](../images/", "](docs/images/") for name in ORDER]
    text = "\n\n".join(parts) + "\n"
    start = text.index("| option | default | what it does |")
    end = text.index("\n\n", start)
    return text[:start] + markdown_table(TrainConfig) + text[end:]


if __name__ == "__main__":
    (ROOT / "README.md").write_text(build(), encoding="utf-8")
    print("README.md written")
