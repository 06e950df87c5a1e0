"""Benchmark rows for preparation (``lora_trainer.bench`` calls ``prepare_rows()``).

The workload our users bring: 35 phone photos, 3024×4032 JPEG (half stored landscape with an EXIF
rotation, as phones do), cropped to 512² with u2netp background removal. The photos are generated once
(a drawn subject plus sensor-like noise, so they are as large and as slow to decode as real ones: ~3 MB)
and cached. Target: crop + background ≤ 15 s on 2 cores. Tagging is timed on its own row.

``python -m lora_trainer.bench_prepare [--json]`` prints the rows directly.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

N_PHOTOS, PHOTO_W, PHOTO_H = 35, 3024, 4032


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def phone_photos(folder: Optional[Path] = None, n: int = N_PHOTOS) -> Path:
    """``n`` phone-sized JPEGs in ``folder`` (default: a cache folder), made once."""
    import numpy as np
    from PIL import Image, ImageDraw

    if folder is None:
        env = os.environ.get("LORA_TRAINER_CACHE")
        folder = (Path(env) if env else Path.home() / ".cache" / "lora_trainer") / "bench" / f"phone{n}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / f"IMG_{1000 + i}.jpg"
        if path.is_file():
            continue
        small = Image.new("RGB", (PHOTO_W // 4, PHOTO_H // 4), tuple(int(v) for v in rng.integers(60, 230, 3)))
        d = ImageDraw.Draw(small)
        w, h = small.size
        cx = w * (0.35 + 0.3 * rng.random())
        d.ellipse([cx - 0.15 * w, 0.18 * h, cx + 0.15 * w, 0.42 * h], fill=(225, 190, 165))
        d.rounded_rectangle([cx - 0.3 * w, 0.45 * h, cx + 0.3 * w, 1.05 * h], radius=int(0.08 * w),
                            fill=tuple(int(v) for v in rng.integers(20, 200, 3)))
        big = np.asarray(small.resize((PHOTO_W, PHOTO_H), Image.BICUBIC), dtype=np.int16)
        big = big + rng.normal(0, 7, (PHOTO_H, PHOTO_W, 1)).astype(np.int16)  # sensor-like grain
        img = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
        exif = Image.Exif()
        if i % 2:  # stored landscape, shown portrait: what most phones write
            img = img.transpose(Image.Transpose.ROTATE_90)
            exif[0x0112] = 6
        tmp = path.with_suffix(".part")
        img.save(tmp, format="JPEG", quality=92, exif=exif.tobytes())
        os.replace(tmp, path)
    return folder


def _row(name: str, value, unit: str = "s", **extra) -> dict:
    return {"row": name, "value": None if value is None else round(float(value), 3), "unit": unit, **extra}


class _Timer:
    """Wall seconds and the process's CPU seconds (all threads): on a shared machine the CPU seconds
    divided by the cores show what an idle machine would take."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def extra(self, cpus: int) -> dict:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"cpus": cpus, "cpu_s": round(self.cpu, 2), "load_avg": None if load is None else round(load, 2)}


def prepare_rows(n: int = N_PHOTOS, model: str = "u2netp") -> list[dict]:
    """Rows: crop only; crop + background (the target row); toy tagging of the results."""
    from .prepare.background import check_model, rembg_available
    from .prepare.config import PrepareConfig, TagConfig
    from .prepare.pipeline import prepare_folder

    src = phone_photos(n=n)
    cpus = _cpus()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lora-trainer-bench-") as tmp:
        with _Timer() as t:
            rep = prepare_folder(src, Path(tmp) / "crop", PrepareConfig(crop="center", size=512))
        rows.append(_row(f"prepare: centre crop to 512, {n} photos {PHOTO_W}x{PHOTO_H}", t.wall,
                         images=rep["counts"]["ok"], **t.extra(cpus)))
        name = f"prepare: crop + {model} background, {n} photos {PHOTO_W}x{PHOTO_H} (target <= 15 s on 2 cores)"
        ok, why = rembg_available()
        try:
            check_model(model)
        except Exception as exc:  # noqa: BLE001 - the row says what is missing
            ok, why = False, str(exc)
        out = Path(tmp) / "bg"
        if ok:
            with _Timer() as t:
                rep = prepare_folder(src, out, PrepareConfig(crop="center", size=512, background=model))
            rows.append(_row(name, t.wall, images=rep["counts"]["ok"], **t.extra(cpus)))
        else:
            rows.append(_row(name, None, cpus=cpus, note=why))
            out = Path(tmp) / "crop"
        from .tagging.autotag import tag_paths
        from .tagging.registry import get_tagger
        from .training.data import list_images

        images = list_images(out)
        with _Timer() as t:
            tag_paths(images, get_tagger("toy"), TagConfig(tagger="toy", existing="overwrite"))
        rows.append(_row(f"tagging: toy tagger, {len(images)} prepared images", t.wall, **t.extra(cpus)))
        wd = get_tagger("wd14") if _wd14_ready() else None
        if wd is not None:
            with _Timer() as t:
                tag_paths(images, wd, TagConfig(tagger="wd14", existing="overwrite"))
            rows.append(_row(f"tagging: wd14, {len(images)} prepared images", t.wall, **t.extra(cpus)))
        else:
            rows.append(_row(f"tagging: wd14, {len(images)} prepared images", None,
                             note="no WD14 model in its folder (TagConfig.model_dir)"))
    return rows


def _wd14_ready() -> bool:
    from .tagging.wd14 import WD14Tagger

    return WD14Tagger().available()[0]


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for r in prepare_rows():
        if "--json" in args:
            print(json.dumps(r, ensure_ascii=False))
        else:
            v = "n/a" if r["value"] is None else f"{r['value']:.2f} {r['unit']}"
            more = f"  (cpu {r['cpu_s']} s on {r['cpus']} cores, load {r['load_avg']})" if "cpu_s" in r else ""
            print(f"{r['row']}: {v}{more}" + (f"  ({r['note']})" if r.get("note") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
