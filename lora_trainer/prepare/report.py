"""The preparation report: one entry per input file, written to ``DEST/report.json``.

Statuses: ``ok`` (an image was written; ``warnings`` may say it is small, a near duplicate or upscaled),
``skipped`` (``reason`` says why: unreadable, truncated, empty, a decompression or zip bomb, an exact
duplicate, not an image), ``failed`` (an unexpected error on that file; the batch went on) and
``cancelled`` (the batch was stopped before the file's turn). The file is UTF-8 with names unescaped, so
a CJK file name reads as itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..workspace import write_json

REPORT_NAME = "report.json"
REPORT_VERSION = 1
OK, SKIPPED, FAILED, CANCELLED = "ok", "skipped", "failed", "cancelled"


@dataclass
class StepProgress:
    """A batch step's progress, as the JobRunner and the tab read it (``step`` of ``total`` done)."""

    phase: str
    step: int
    total: int
    file: str = ""


ProgressFn = Callable[[StepProgress], None]


def entry(file: str, status: str = OK, reason: str = "", **extra: Any) -> dict:
    e: dict = {"file": file, "status": status}
    if reason:
        e["reason"] = reason
    e.update(extra)
    return e


def counts(files: list[dict]) -> dict:
    c = {"files": len(files), OK: 0, SKIPPED: 0, FAILED: 0, CANCELLED: 0, "warnings": 0}
    for f in files:
        c[f["status"]] = c.get(f["status"], 0) + 1
        c["warnings"] += bool(f.get("warnings"))
    return c


def build(source: str, dest: Path, config: dict, files: list[dict], started: float, cancelled: bool,
          tagging: Optional[dict] = None) -> dict:
    rep = {"version": REPORT_VERSION, "source": source, "dest": str(dest), "config": config,
           "cancelled": cancelled, "seconds": round(time.time() - started, 3), "counts": counts(files),
           "files": files}
    if tagging is not None:
        rep["tagging"] = tagging
    return rep


def write(dest: Path, report: dict) -> Path:
    path = dest / REPORT_NAME
    write_json(path, report)
    return path


def lines(report: dict) -> list[str]:
    """Human-readable lines for the files that were skipped, failed or warned about."""
    out = []
    for f in report["files"]:
        if f["status"] in (SKIPPED, FAILED):
            out.append(f"{f['status']}: {f['file']}: {f.get('reason', '')}")
        for w in f.get("warnings", []):
            out.append(f"warning: {f['file']}: {w}")
    return out


def safe_call(fn: Optional[Callable[..., Any]], *args: Any) -> None:
    """Call a progress callback; a failing UI callback never stops the batch."""
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        import logging

        logging.getLogger("lora_trainer").exception("progress callback failed (ignored)")
