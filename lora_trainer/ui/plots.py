"""Pictures the tab draws from a job's files: the loss curve, and the epoch × weight test grid.

The loss curve is read from the job's ``log.jsonl`` (one record per logged step) and drawn with matplotlib's
Agg canvas when it imports (never pyplot: the host's backend stays as it is), else with PIL, as the LR
estimate's plot is. Both return PIL images, which gradio 3.41 and 4.x show alike.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont


def read_log(path: Path, key: str = "loss") -> list[tuple[int, float]]:
    """``(step, value)`` pairs of ``key`` from a ``log.jsonl``; broken or partial lines are skipped."""
    out = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            v = rec.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v) and isinstance(rec.get("step"), int):
                out.append((rec["step"], float(v)))
    return out


def smooth(values: Sequence[float], k: int) -> list[float]:
    """Trailing mean over ``k`` values (what makes a noisy per-step loss readable)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= k:
            acc -= values[i - k]
        out.append(acc / min(i + 1, k))
    return out


def loss_plot(points: Sequence[tuple[int, float]], title: str = "loss", size=(640, 300)) -> Optional[Image.Image]:
    """The curve (raw and smoothed); None when there is nothing to draw yet."""
    if len(points) < 2:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    sm = smooth(ys, max(1, len(ys) // 20))
    try:
        return _matplotlib(xs, ys, sm, title, size)
    except ImportError:
        return _pil(xs, ys, sm, title, size)


def _matplotlib(xs, ys, sm, title, size) -> Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, ys, color="#9ecae1", lw=1, label="loss")
    ax.plot(xs, sm, color="#08519c", lw=1.8, label="smoothed")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _pil(xs, ys, sm, title, size) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 50, w - 10, 25, h - 25
    lo, hi = min(ys), max(ys)
    hi = hi if hi > lo else lo + 1e-6

    def px(x, y):
        fx = (x - xs[0]) / max(1, xs[-1] - xs[0])
        return left + fx * (right - left), bottom - (y - lo) / (hi - lo) * (bottom - top)

    d.rectangle([left, top, right, bottom], outline="#999999")
    d.line([px(x, y) for x, y in zip(xs, ys)], fill="#9ecae1", width=1)
    d.line([px(x, y) for x, y in zip(xs, sm)], fill="#08519c", width=2)
    d.text((left, 5), title, fill="black")
    d.text((2, top), f"{hi:.3g}", fill="black")
    d.text((2, bottom - 10), f"{lo:.3g}", fill="black")
    d.text((right - 60, bottom + 5), f"step {xs[-1]}", fill="black")
    return img


def compose_grid(cells: Sequence[Sequence[Optional[str]]], row_labels: Sequence[str],
                 col_labels: Sequence[str], cell: int = 160) -> Image.Image:
    """Rows × columns of images (paths; None = an empty cell) with labels on the left and on top."""
    font = ImageFont.load_default()
    label_w = max([90] + [int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(s, font=font)) + 12
                          for s in row_labels])
    head = 22
    rows, cols = len(cells), max((len(r) for r in cells), default=0)
    grid = Image.new("RGB", (label_w + cols * cell, head + rows * cell), "white")
    d = ImageDraw.Draw(grid)
    for j, lab in enumerate(col_labels):
        d.text((label_w + j * cell + 6, 5), lab, fill="black", font=font)
    for i, row in enumerate(cells):
        d.text((4, head + i * cell + cell // 2 - 6), row_labels[i], fill="black", font=font)
        for j, path in enumerate(row):
            if not path:
                continue
            with Image.open(path) as im:
                tile = im.convert("RGB").resize((cell, cell), Image.NEAREST if im.width < cell else Image.BILINEAR)
            grid.paste(tile, (label_w + j * cell, head + i * cell))
    return grid
