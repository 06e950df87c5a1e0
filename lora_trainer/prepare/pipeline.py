"""``prepare_folder``: steps 1–2 (and optionally 3) over a folder, the one entry point the CLI, the tab,
the API and the demo call.

Order of work, and why:
1. list and check every file (header, size, hash) — cheap, and bad files are reported before any work;
2. load what the batch needs once (background model session, face detector, manual boxes, tagger), so a
   missing model fails fast with a UserError instead of failing on every image;
3. process the images in a thread pool: decode (at reduced JPEG scale when the crop allows), crop, resize,
   cut out, save image + mask + previews. Pillow, OpenCV and onnxruntime release the GIL, so threads
   scale with cores without copying images between processes;
4. near duplicates are flagged in input order, captions written, ``report.json`` last.

The source is only read. ``should_stop`` is polled before each image; a stopped batch still writes its
report, with the files it did not reach marked ``cancelled``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UserError
from ..workspace import atomic_path, write_text
from . import crop as C
from . import report as R
from .config import PrepareConfig, TagConfig, check_prepare, parse_fill
from .edges import EdgeSettings
from .importer import CAPTION_EXTS, SIDECAR_EXTS, VIDEO_EXTS, VIDEO_REASON, BadImage, decode, dhash, display_name, \
    extract_zip, hamming, header, list_files, sha256_file

log = logging.getLogger("lora_trainer")
PREVIEW_DIR = "previews"
PREVIEW_SIZE = 256


@dataclasses.dataclass
class _Batch:
    cfg: PrepareConfig
    dest: Path
    fill: Optional[tuple]
    edges: EdgeSettings
    model: Optional[object] = None
    boxes: Optional[dict] = None


def _out_stem(rel: str, used: set) -> str:
    stem = display_name(rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel).replace("/", "_")
    stem = stem.strip() or "image"
    cand, n = stem, 2
    while cand.lower() in used:
        cand, n = f"{stem}_{n}", n + 1
    used.add(cand.lower())
    return cand


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", compress_level=3)


def _min_short(cfg: PrepareConfig, w: int, h: int) -> int:
    """How small the decoded short side may be for this crop mode (JPEG draft decoding)."""
    if cfg.crop == "none":
        return 0 if cfg.max_side <= 0 else math.ceil(cfg.max_side * min(w, h) / max(w, h))
    return cfg.size


def _crop_box(batch: _Batch, dec, rel: str, notes: list, warnings: list) -> tuple[C.Box, Optional[np.ndarray]]:
    """Where to crop (original pixels), and the subject mask of the whole frame when one was computed."""
    cfg = batch.cfg
    W, H = dec.size
    min_side = min(cfg.size, W, H)
    if cfg.crop == "none":
        return (0, 0, W, H), None
    if cfg.crop == "center":
        return C.center_box(W, H), None
    if cfg.crop == "manual":
        box = C.manual_box(batch.boxes or {}, rel, W, H)
        if box is None:
            notes.append("no manual box for this file: centre crop")
            return C.center_box(W, H), None
        l, t, r, b = box
        if r - l != b - t:
            notes.append("manual box made square")
        return C.square_at(W, H, (l + r) / 2, (t + b) / 2, max(r - l, b - t)), None
    if cfg.crop == "focal":
        l, t, r, b = (v / dec.scale for v in C.HOST_CROP_MODES["focal"](dec.rgb))  # checked by check_prepare
        return C.square_at(W, H, (l + r) / 2, (t + b) / 2, min(r - l, W, H)), None
    if cfg.crop == "face":
        faces = C.detect_faces(dec.rgb, cfg.face_model)
        if faces:
            face = [v / dec.scale for v in faces[0]]
            if len(faces) > 1:
                notes.append(f"{len(faces)} faces found: the largest used")
            return C.face_box(face, W, H, cfg.face_scale, cfg.head_room, min_side), None
        # a warning, not a note: the crop did not do what was asked, and the counts and the tab must say so
        warnings.append("no face found: centre crop used (check the crop in the preview, or choose crop "
                        "'subject' or 'manual' for this photo)")
        return C.center_box(W, H), None
    # subject: the file's own transparency, else the background model, else the busiest region
    mask = None
    if dec.alpha is not None:
        mask = np.asarray(dec.alpha, dtype=np.float32) / 255.0
    elif batch.model is not None:
        thumb = dec.rgb.copy()
        thumb.thumbnail((640, 640), Image.BILINEAR)
        mask = batch.model.predict(thumb)
    if mask is not None:
        box = C.subject_box(mask, W, H, cfg.subject_margin, min_side)
        if box is not None:
            return box, mask
        notes.append("the mask found no subject: busiest region used")
    g = dec.rgb.convert("L")
    g.thumbnail((256, 256), Image.BILINEAR)
    return C.focal_box(np.asarray(g, dtype=np.float32), W, H), mask


def _process(batch: _Batch, path: Path, rel: str, stem: str, caption_src: Optional[Path]) -> dict:
    cfg, t0 = batch.cfg, time.time()
    max_px = cfg.max_megapixels * 1e6
    dec = decode(path, max_px, lambda w, h: _min_short(cfg, w, h))
    notes, warnings = list(dec.notes), []
    W, H = dec.size
    box, _ = _crop_box(batch, dec, rel, notes, warnings)
    side = min(box[2] - box[0], box[3] - box[1])
    if cfg.crop == "none":
        out_size = C.fit_size(W, H, cfg.max_side)
        need = 0
    else:
        out_size = (cfg.size, cfg.size)
        need = cfg.size
    if need and dec.scale < 1 and side * dec.scale < need:  # the crop needs more pixels than the draft gave
        dec2 = decode(path, max_px, math.ceil(min(W, H) * need / side))
        dec2.notes = dec.notes
        dec = dec2
    if min(W, H) < cfg.size / 2:
        warnings.append(f"small: {W}x{H} is under half the target size {cfg.size}")
    upscale = out_size[0] / (box[2] - box[0])
    if upscale > cfg.max_upscale + 1e-6:
        warnings.append(f"upscaled x{upscale:.2f}, more than max_upscale x{cfg.max_upscale:g}")
    sbox = tuple(v * dec.scale for v in box)
    img = dec.rgb.resize(out_size, Image.LANCZOS, box=sbox, reducing_gap=3.0)
    alpha = None
    if dec.alpha is not None:
        a = dec.alpha.resize(out_size, Image.LANCZOS, box=sbox)
        mask = np.asarray(a, dtype=np.float32) / 255.0
        from .background import cut_out

        img, alpha = cut_out(img, mask, batch.fill, batch.edges, clean=False)
    elif batch.model is not None:
        from .background import cut_out

        mask = batch.model.predict(img)
        img, alpha = cut_out(img, mask, batch.fill, batch.edges, cfg.alpha_matting)
    out = {"output": f"{stem}.png"}
    _save_png(img, batch.dest / out["output"])
    if alpha is not None and cfg.save_masks:
        out["mask"] = f"{stem}.mask.png"
        _save_png(Image.fromarray(np.round(alpha * 255).astype(np.uint8), "L"), batch.dest / out["mask"])
    if caption_src is not None:
        out["caption"] = f"{stem}.txt"
        write_text(batch.dest / out["caption"], caption_src.read_text(encoding="utf-8", errors="replace"))
        notes.append(f"caption copied from {display_name(caption_src.name)}")
    if cfg.previews:
        out.update(_previews(batch.dest, stem, dec, box, img))
    return R.entry(rel, R.OK, size=[W, H], crop=list(box), out_size=list(out_size),
                   upscale=round(upscale, 3), notes=notes, warnings=warnings, dhash=f"{dhash(dec.rgb):016x}",
                   seconds=round(time.time() - t0, 3), **out)


def _previews(dest: Path, stem: str, dec, box: C.Box, after: Image.Image) -> dict:
    """Before (the whole frame, crop box drawn) and after thumbnails for the tab."""
    before = dec.rgb.copy()
    before.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.BILINEAR)
    k = before.width / dec.size[0]
    ImageDraw.Draw(before).rectangle([v * k for v in box], outline=(255, 200, 0), width=2)
    thumb = after.copy()
    thumb.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.BILINEAR)
    names = {"preview_before": f"{PREVIEW_DIR}/{stem}.before.jpg", "preview_after": f"{PREVIEW_DIR}/{stem}.after.png"}
    with atomic_path(dest / names["preview_before"]) as tmp:
        before.save(tmp, format="JPEG", quality=85)
    _save_png(thumb, dest / names["preview_after"])
    return names


def _load_batch(cfg: PrepareConfig, dest: Path, workers: int) -> _Batch:
    """Everything loaded once per batch; a missing piece is a UserError now, not one per image."""
    batch = _Batch(cfg, dest, parse_fill(cfg.fill), EdgeSettings(cfg.edge_erode, cfg.edge_band, cfg.edge_feather,
                                                                  cfg.decontaminate))
    if cfg.background != "none":
        from .background import MaskModel

        threads = max(1, (os.cpu_count() or 1) // workers)
        batch.model = MaskModel(cfg.background, cfg.model_path, threads=threads)
    if cfg.crop == "face":
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise UserError("face crop needs OpenCV (cv2), which is not installed",
                            "install opencv-python-headless, or choose another crop mode") from None
    if cfg.crop == "manual":
        batch.boxes = C.load_boxes(cfg.boxes)
    return batch


def tag_config(cfg: PrepareConfig, tag_cfg: Optional[TagConfig] = None) -> TagConfig:
    """The tagging config of a prepare run: ``tag_cfg``'s thresholds, and the tagger and trigger of the
    prepare config where it sets them, else ``tag_cfg``'s (so ``{"tag": {"tagger": "wd14"}}`` tags too).
    Its ``tagger`` is ``none`` when neither chose one."""
    tag_cfg = tag_cfg or TagConfig()
    return dataclasses.replace(tag_cfg, tagger=cfg.tagger if cfg.tagger != "none" else tag_cfg.tagger,
                               trigger=cfg.trigger or tag_cfg.trigger)


def prepare_folder(src: Union[str, Path], dest: Union[str, Path], cfg: Optional[PrepareConfig] = None,
                   progress: Optional[R.ProgressFn] = None, should_stop: Optional[Callable[[], bool]] = None,
                   tag_cfg: Optional[TagConfig] = None) -> dict:
    """Import, crop and cut out every image of ``src`` (a folder or a .zip) into ``dest``.

    Writes ``<stem>.png`` (+ ``<stem>.mask.png`` with a background model, ``<stem>.txt`` when the source
    had a caption or a tagger ran), ``previews/`` and ``report.json``; returns the report. With a tagger
    chosen (``cfg.tagger`` or ``tag_cfg.tagger``), captions are written by ``tagging.autotag`` with
    ``tag_cfg``'s thresholds.
    """
    cfg = check_prepare(cfg or PrepareConfig())
    started = time.time()
    src, dest = Path(src), Path(dest)
    if not src.exists():
        raise UserError(f"input not found: {src}", "give --input a folder of images or a .zip")
    if src.is_dir() and (dest.resolve() == src.resolve() or src.resolve() in dest.resolve().parents):
        raise UserError("the output folder is inside the input folder", "the source is never written: choose "
                                                                         "an output folder outside it")
    should_stop = should_stop or (lambda: False)
    if src.is_file() and src.suffix.lower() != ".zip":
        raise UserError(f"{src.name} is not a folder or a .zip", "give --input a folder or a zip archive")
    with tempfile.TemporaryDirectory(prefix="lora-trainer-zip-") as tmp:
        files, sources = _gather(src, Path(tmp))
        dest.mkdir(parents=True, exist_ok=True)
        report = _run(cfg, sources, dest, files, progress, should_stop, tag_cfg)
    report = R.build(display_name(str(src)), dest, dataclasses.asdict(cfg), report["files"], started,
                     report["cancelled"], report.get("tagging"))
    R.write(dest, report)
    return report


def _gather(src: Path, tmp: Path) -> tuple[list[dict], list[tuple[Path, str]]]:
    """``(report lines of refused archive members, [(file, name shown in the report)])``.

    Zips (the input itself, or zips inside the input folder) are unpacked into ``tmp``; their members
    show as ``archive.zip/member``.
    """
    refused: list[dict] = []
    sources: list[tuple[Path, str]] = []
    top = [(src, display_name(src.name))] if src.is_file() else \
        [(p, display_name(p.relative_to(src).as_posix())) for p in list_files(src)]
    for n, (p, rel) in enumerate(top):
        if p.suffix.lower() == ".zip" and not p.name.startswith("."):
            out = tmp / f"zip{n}"
            out.mkdir()
            for line in extract_zip(p, out):
                refused.append({**line, "file": rel + line["file"][len(display_name(p.name)):]})
            sources += [(q, f"{rel}/{display_name(q.relative_to(out).as_posix())}") for q in list_files(out)]
        else:
            sources.append((p, rel))
    return refused, sources


def _run(cfg, sources: list, dest: Path, files: list, progress, should_stop, tag_cfg) -> dict:
    all_files = [p for p, _ in sources]
    rels = dict(sources)
    by_stem: dict = {}
    for p in all_files:
        by_stem.setdefault((p.parent, p.stem.lower()), []).append(p)
    candidates, entries = [], {}
    for p in all_files:
        rel = rels[p]
        if p.name.startswith("."):
            entries[p] = R.entry(rel, R.SKIPPED, "hidden file")
        elif p.suffix.lower() in SIDECAR_EXTS:
            owner = [q for q in by_stem[(p.parent, p.stem.lower())] if q.suffix.lower() not in SIDECAR_EXTS]
            entries[p] = R.entry(rel, R.SKIPPED, f"caption of {display_name(owner[0].name)}, copied with it"
                                 if owner and p.suffix.lower() in CAPTION_EXTS else "not an image (sidecar file)")
        elif p.suffix.lower() in VIDEO_EXTS:
            entries[p] = R.entry(rel, R.SKIPPED, VIDEO_REASON)
        else:
            candidates.append(p)
    workers = cfg.workers or os.cpu_count() or 1
    max_px = cfg.max_megapixels * 1e6

    def check(p: Path):
        try:
            header(p, max_px)
            return sha256_file(p)
        except BadImage as exc:
            return exc
        except OSError as exc:
            return BadImage(f"unreadable ({exc.strerror or exc})")

    R.safe_call(progress, R.StepProgress("scan", 0, len(candidates)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        checks = list(pool.map(check, candidates))
    seen: dict[str, str] = {}
    todo = []
    for p, res in zip(candidates, checks):
        if isinstance(res, BadImage):
            entries[p] = R.entry(rels[p], R.SKIPPED, str(res))
        elif res in seen:
            entries[p] = R.entry(rels[p], R.SKIPPED, f"exact duplicate of {seen[res]}")
        else:
            seen[res] = rels[p]
            todo.append(p)
    R.safe_call(progress, R.StepProgress("scan", len(candidates), len(candidates)))
    batch = _load_batch(cfg, dest, workers) if todo else None
    tagger = None
    tcfg = tag_config(cfg, tag_cfg)
    if tcfg.tagger != "none" and todo:
        from ..tagging.autotag import ready_tagger

        tagger = ready_tagger(tcfg)  # fails now, before any image is processed
    used: set = set()
    stems = {p: _out_stem(rels[p], used) for p in todo}
    done = [0]
    lock = threading.Lock()

    def work(p: Path) -> dict:
        if should_stop():
            return R.entry(rels[p], R.CANCELLED, "the batch was stopped before this file")
        cap = next((c for ext in CAPTION_EXTS for c in by_stem.get((p.parent, p.stem.lower()), [])
                    if c.suffix.lower() == ext), None)
        try:
            res = _process(batch, p, rels[p], stems[p], cap)
        except BadImage as exc:
            res = R.entry(rels[p], R.SKIPPED, str(exc))
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - one odd file never stops the batch
            log.exception("prepare failed on %s", rels[p])
            res = R.entry(rels[p], R.FAILED, f"{type(exc).__name__}: {exc}")
        with lock:
            done[0] += 1
            R.safe_call(progress, R.StepProgress("process", done[0], len(todo), rels[p]))
        return res

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, todo))
    for p, res in zip(todo, results):
        entries[p] = res
    _flag_near_duplicates([entries[p] for p in todo], cfg.near_duplicate_distance)
    ordered = [entries[p] for p in all_files]
    cancelled = any(e["status"] == R.CANCELLED for e in ordered)
    out = {"files": files + ordered, "cancelled": cancelled}
    if tagger is not None and not cancelled:
        out["tagging"] = _tag_outputs(tagger, tcfg, dest, ordered, progress, should_stop)
        out["cancelled"] = out["tagging"].get("cancelled", False)
    return out


def _flag_near_duplicates(entries: list[dict], max_distance: int) -> None:
    if max_distance < 0:
        return
    kept: list[tuple[int, str]] = []
    for e in entries:
        if e["status"] != R.OK:
            continue
        h = int(e["dhash"], 16)
        near = next(((name, hamming(h, h2)) for h2, name in kept if hamming(h, h2) <= max_distance), None)
        if near:
            e["warnings"].append(f"near duplicate of {near[0]} (perceptual distance {near[1]} of 64)")
        kept.append((h, e["file"]))


def _tag_outputs(tagger, tcfg: TagConfig, dest: Path, entries: list[dict], progress, should_stop) -> dict:
    from ..tagging.autotag import tag_paths

    ok = [e for e in entries if e["status"] == R.OK]
    res = tag_paths([dest / e["output"] for e in ok], tagger, tcfg, progress, should_stop)
    for e, r in zip(ok, res["files"]):
        if r["status"] == "tagged":
            e["caption"] = Path(r["file"]).with_suffix(".txt").name
    return {k: v for k, v in res.items() if k != "files"}
