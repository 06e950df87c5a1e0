"""Auto-tag a folder: captions as ``.txt`` beside the images, written atomically.

The caption rules are the ones our users ask for: threshold and max tags, an exclusion list, underscores
to spaces, parentheses escaped (the WebUI reads ``(…)`` as emphasis), the trigger word first, and a policy
for images that already have a caption — ``skip`` (the default: hand-written captions are precious),
``overwrite`` or ``append``. A caption that is replaced or extended is first copied to
``<folder>/.backup/tag-<time>/`` (INTERFACES.md §2: ``tag`` keeps a backup of what it replaces).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from PIL import Image

from ..errors import UserError
from ..workspace import write_json, write_text
from ..training.data import IMAGE_EXTS, caption_file, left_out_text, read_folder
from .base import Tagger, TagResult, format_caption

BACKUP_DIR = ".backup"


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.replace("\n", ",").split(",") if t.strip()]


def exclusions(text: str) -> list[str]:
    """The exclusion list as the user typed it (tags in either spelling: ``long_hair`` or ``long hair``)."""
    out = []
    for t in split_tags(text):
        out += [t, t.replace("_", " "), t.replace(" ", "_")]
    return out


def caption_for(result: TagResult, cfg, existing: Optional[str] = None) -> str:
    """The caption line for one image under ``cfg`` (a TagConfig); ``existing`` is kept first (append)."""
    new = format_caption(result.names(), "", exclusions(cfg.exclude), cfg.max_tags, cfg.underscores_to_spaces,
                         cfg.escape_parentheses)
    tags = split_tags(new)
    if existing:
        have = split_tags(existing)
        low = {t.lower() for t in have}
        tags = have + [t for t in tags if t.lower() not in low]
    trigger = (cfg.trigger or "").strip()
    if trigger:
        tags = [trigger] + [t for t in tags if t != trigger]
    return ", ".join(tags)


def _load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "P"):  # cut-outs with transparency: tag them as seen over white
            rgba = im.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return im.convert("RGB")


def tag_paths(paths: Sequence[Path], tagger: Tagger, cfg, progress: Optional[Callable] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> dict:
    """Tag ``paths`` in batches; one report line per image (``tagged``, ``skipped``, ``cancelled``)."""
    from ..prepare.report import StepProgress, safe_call

    should_stop = should_stop or (lambda: False)
    files: list[dict] = []
    backup: Optional[Path] = None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    todo: list[tuple[Path, Optional[str]]] = []
    for p in paths:
        cap = caption_file(p)
        text = cap.read_text(encoding="utf-8", errors="replace").strip() if cap else ""
        if text and cfg.existing == "skip":
            files.append({"file": p.name, "status": "skipped", "reason": f"has a caption ({cap.name})"})
        else:
            todo.append((p, text or None))
    started = time.time()
    done = 0
    for i in range(0, len(todo), cfg.batch_size):
        chunk = todo[i:i + cfg.batch_size]
        if should_stop():
            files += [{"file": p.name, "status": "cancelled"} for p, _ in todo[i:]]
            break
        images, ok = [], []
        for p, old in chunk:
            try:
                images.append(_load(p))
                ok.append((p, old))
            except Exception as exc:  # noqa: BLE001 - an unreadable image is one report line
                files.append({"file": p.name, "status": "skipped", "reason": f"unreadable ({exc})"})
        try:
            results = tagger.tag(images, threshold=cfg.threshold) if images else []
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - fail fast, with the tagger's name, not a hang
            raise UserError(f"tagger {getattr(tagger, 'name', '?')!r} failed: {type(exc).__name__}: {exc}",
                            "check its model files; the captions written so far are kept") from exc
        for (p, old), res in zip(ok, results):
            keep = old if cfg.existing == "append" else None
            line = caption_for(res, cfg, keep)
            target = p.with_suffix(".txt")
            if old is not None:
                backup = backup or p.parent / BACKUP_DIR / f"tag-{stamp}"
                src = caption_file(p)
                backup.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, backup / src.name)
            write_text(target, line + "\n")
            files.append({"file": p.name, "status": "tagged", "caption": line, "tags": len(res.tags)})
        done += len(chunk)
        safe_call(progress, StepProgress("tag", done, len(todo), chunk[-1][0].name))
    counts: dict = {}
    for f in files:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    return {"tagger": getattr(tagger, "name", "?"), "counts": counts, "files": files,
            "backup": str(backup) if backup else None, "cancelled": counts.get("cancelled", 0) > 0,
            "seconds": round(time.time() - started, 3)}


def ready_tagger(cfg) -> Tagger:
    """``cfg.tagger``, ready to use, or a UserError now: unknown, unavailable (what is missing) or none.
    Cheap (no model is loaded), so the API and the tab ask before queueing a tagging job."""
    from .registry import get_tagger

    tagger = get_tagger(cfg.tagger, cfg)
    if tagger is None:
        raise UserError("no tagger chosen", "give --tagger toy, wd14 (or deepbooru/clip in the WebUI)")
    return tagger


def tag_folder(folder, cfg, tagger: Optional[Tagger] = None, progress: Optional[Callable] = None,
               should_stop: Optional[Callable[[], bool]] = None, write_report: bool = True) -> dict:
    """Tag every image in ``folder`` (the ``tag`` command); ``folder/tag-report.json`` says what happened."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}", "give --input a folder of images")
    tagger = tagger or ready_tagger(cfg)
    images, unread = read_folder(folder)  # the formats training reads: a caption for a HEIC would train nothing
    if not images and unread:
        raise UserError(f"no images training can read in {folder}: {left_out_text(unread)}",
                        "run the prepare step on them first: it writes them as PNG")
    if not images:
        raise UserError(f"no images in {folder}", f"put {', '.join(IMAGE_EXTS)} files there")
    report = tag_paths(images, tagger, cfg, progress, should_stop)
    for p in unread:
        report["files"].append({"file": p.name, "status": "skipped",
                                "reason": "a format training does not read (the prepare step writes it as PNG)"})
    if unread:
        report["counts"]["skipped"] = report["counts"].get("skipped", 0) + len(unread)
    if write_report:
        write_json(folder / "tag-report.json", report)
    return report
