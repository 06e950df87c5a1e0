"""Optional TensorBoard event files from the training log stream.

Users coming from kohya read their runs in TensorBoard (``lr/d*lr`` is where the tutorial reads the
D-Adaptation value), so a run can write the same scalars under the same names. ``torch.utils.tensorboard``
needs the ``tensorboard`` package, which neither profile pins; without it the run goes on and the user
gets one clear line saying why there are no event files (``log.jsonl`` has the same numbers).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

log = logging.getLogger("lora_trainer")

NOTICE = ("TensorBoard event files are off: torch.utils.tensorboard needs the 'tensorboard' package "
          "(pip install tensorboard); the same numbers are in log.jsonl")

# log record key -> TensorBoard tag (kohya's names where it has them)
TAGS = {"loss": "loss/current", "lr": "lr/unet", "d_lr": "lr/d*lr", "it_s": "speed/it_s"}


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as exc:  # noqa: BLE001 - ImportError, or tensorboard failing inside its own import
        return None, f"{NOTICE} ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})"
    return SummaryWriter, None


class TensorBoardLog:
    """A callable for ``Callbacks.on_log`` writing scalars to ``<job_dir>/tensorboard``; ``close()`` at the end.

    ``enabled`` says whether event files are written; ``notice`` is the one line for the user when not.
    """

    def __init__(self, job_dir, writer_class=None):
        self.folder = Path(job_dir) / "tensorboard"
        cls, self.notice = (writer_class, None) if writer_class is not None else _writer_class()
        self.writer = None
        if cls is not None:
            try:
                self.writer = cls(log_dir=str(self.folder))
            except Exception as exc:  # noqa: BLE001
                self.notice = f"{NOTICE} ({type(exc).__name__}: {exc})"
        if self.notice:
            log.warning(self.notice)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def __call__(self, record: dict) -> None:
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        for key, tag in TAGS.items():
            v = record.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(tag, float(v), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def tensorboard_log(job_dir) -> Optional[TensorBoardLog]:
    """A ``TensorBoardLog`` for ``job_dir`` (None when ``job_dir`` is None)."""
    return TensorBoardLog(job_dir) if job_dir is not None else None
