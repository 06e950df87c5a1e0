"""A folder of images and their captions, edited in memory with undo/redo and saved crash-safely.

Captions are ``<image>.txt``, else ``<image>.caption`` (what training reads, INTERFACES.md §3), in the
folder and in its direct subfolders (a kohya ``<repeats>_<name>`` layout). A new caption is a ``.txt``.

Saving, and why it is shaped this way:
1. the previous content of every caption about to change is copied into
   ``.lora_trainer_tags/backup/<time>/`` (the user's undo after the program is closed);
2. a journal with every new caption is written atomically (``pending-save.json``);
3. each caption is replaced atomically (temporary file, fsync, rename: old or new, never half);
4. the journal is removed.
A process killed during 3 leaves some captions old and some new, none truncated; the next ``load`` finds
the journal and finishes the save, so an edit the user saved is never lost. Only changed files are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import UserError
from ..training.data import CAPTION_EXTS, caption_file, list_images, read_caption
from ..workspace import TMP_PREFIX, write_bytes, write_json, write_text
from . import ops

log = logging.getLogger("lora_trainer.tags")
META_DIR = ".lora_trainer_tags"
JOURNAL = "pending-save.json"
KEEP_BACKUPS = 20
HISTORY_LIMIT = 500
STALE_TMP_S = 600


def _sha(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else hashlib.sha256(data).hexdigest()


def find_images(folder: Path) -> list[Path]:
    """Images in ``folder`` and in its kohya ``<repeats>_<name>`` subfolders (what training reads), sorted;
    other subfolders (the preparation step's previews/, backups) are not captions' business."""
    from ..training.data import parse_kohya_dirname

    found = list_images(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and parse_kohya_dirname(p.name)):
        found += list_images(sub)
    return found


@dataclass
class Entry:
    image: Path
    caption: Path          # where the caption is (or will be) written
    saved: list[str]       # tags as on disk
    tags: list[str]        # tags being edited


@dataclass
class SaveReport:
    written: list[str] = field(default_factory=list)   # image keys whose caption was written
    backup: Optional[Path] = None


class TagStore:
    """The captions of one folder. Every edit goes through ``apply`` so it can be undone."""

    def __init__(self, folder: Path, entries: dict[str, Entry], warnings: list[str]):
        self.folder = folder
        self._entries = entries
        self.warnings = warnings
        self._undo: list[tuple[str, dict[str, tuple[list[str], list[str]]]]] = []
        self._redo: list[tuple[str, dict[str, tuple[list[str], list[str]]]]] = []

    # ------------------------------------------------------------------ reading
    def keys(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def tags(self, key: str) -> list[str]:
        return list(self._entry(key).tags)

    def captions(self) -> dict[str, list[str]]:
        """A copy of every image's tags, for the pure functions in ``ops`` and ``rules``."""
        return {k: list(e.tags) for k, e in self._entries.items()}

    def image_path(self, key: str) -> Path:
        return self._entry(key).image

    def caption_path(self, key: str) -> Path:
        return self._entry(key).caption

    def dirty_keys(self) -> list[str]:
        return [k for k, e in self._entries.items() if e.tags != e.saved]

    @property
    def dirty(self) -> bool:
        return any(e.tags != e.saved for e in self._entries.values())

    def _entry(self, key: str) -> Entry:
        try:
            return self._entries[key]
        except KeyError:
            raise UserError(f"no image {key!r} in {self.folder}", "pick one of the folder's images") from None

    # ------------------------------------------------------------------ editing
    def apply(self, new: dict[str, Sequence[str]], label: str) -> int:
        """Make ``new`` (all or some images' tags) current as ONE undo step; returns images changed."""
        diff = {}
        for k, tags in new.items():
            e = self._entry(k)
            tags = list(tags)
            if tags != e.tags:
                diff[k] = (list(e.tags), tags)
        if not diff:
            return 0
        for k, (_, after) in diff.items():
            self._entries[k].tags = list(after)
        self._undo.append((label, diff))
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()
        return len(diff)

    def set_tags(self, key: str, tags: Sequence[str] | str, label: str = "edit") -> int:
        return self.apply({key: ops.as_list(tags)}, label)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def history(self) -> list[str]:
        return [label for label, _ in self._undo]

    def undo(self) -> Optional[str]:
        """Revert the last operation; returns its label (None when there is nothing to undo)."""
        if not self._undo:
            return None
        label, diff = self._undo.pop()
        for k, (before, _) in diff.items():
            self._entries[k].tags = list(before)
        self._redo.append((label, diff))
        return label

    def redo(self) -> Optional[str]:
        if not self._redo:
            return None
        label, diff = self._redo.pop()
        for k, (_, after) in diff.items():
            self._entries[k].tags = list(after)
        self._undo.append((label, diff))
        return label

    # ------------------------------------------------------------------ saving
    def save(self) -> SaveReport:
        """Write the changed captions (and only those); see the module docstring for the order."""
        changed = [(k, e) for k, e in self._entries.items() if e.tags != e.saved]
        if not changed:
            return SaveReport()
        meta = self.folder / META_DIR
        backup = meta / "backup" / time.strftime("%Y%m%d-%H%M%S")
        n = 1
        while backup.exists():
            n += 1
            backup = backup.with_name(backup.name.split("~")[0] + f"~{n}")
        files = []
        for k, e in changed:
            old = e.caption.read_bytes() if e.caption.is_file() else None
            rel = e.caption.relative_to(self.folder).as_posix()
            if old is not None:
                write_bytes(backup / rel, old)
            files.append({"path": rel, "old_sha256": _sha(old), "new": ops.join_tags(e.tags)})
        write_json(meta / JOURNAL, {"started": time.time(), "backup": backup.relative_to(meta).as_posix(),
                                    "files": files})
        for (k, e), f in zip(changed, files):
            _write_caption(e.caption, f["new"])
            e.saved = list(e.tags)
        (meta / JOURNAL).unlink()
        _prune_backups(meta / "backup", KEEP_BACKUPS)
        return SaveReport([k for k, _ in changed], backup if backup.exists() else None)


def _write_caption(path: Path, text: str) -> None:
    write_text(path, text)


def _prune_backups(root: Path, keep: int) -> None:
    if not root.is_dir():
        return
    olds = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for p in olds[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def backups(folder: str | Path) -> list[Path]:
    """Backup folders of previous captions, oldest first."""
    root = Path(folder) / META_DIR / "backup"
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime) if root.is_dir() else []


def _finish_interrupted_save(folder: Path, warnings: list[str]) -> None:
    """Roll a journal left by a killed save forward, file by file, unless a file changed since."""
    journal = folder / META_DIR / JOURNAL
    if not journal.is_file():
        return
    try:
        data = json.loads(journal.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        journal.unlink()  # a journal is written atomically: unreadable means a foreign file; the save never began
        return
    done, skipped = 0, []
    for f in data.get("files", []):
        path = folder / f["path"]
        new = f["new"].encode("utf-8")
        cur = path.read_bytes() if path.is_file() else None
        if cur == new:
            continue
        if _sha(cur) == f.get("old_sha256"):
            try:
                _write_caption(path, f["new"])
                done += 1
            except OSError as exc:
                skipped.append(f"{f['path']} ({exc})")
        else:
            skipped.append(f["path"])
    journal.unlink()
    warnings.append(f"finished a save that was interrupted: {done} caption(s) written")
    if skipped:
        warnings.append(f"{len(skipped)} caption(s) changed outside the editor since that save (or could not "
                        f"be written) and were left as they are, e.g. {skipped[0]}")


def _clean_temp_files(folders: Iterable[Path], min_age_s: float = STALE_TMP_S) -> None:
    """Remove caption temp files a killed atomic write left (never under a caption's name, so never read).

    Only old ones: a fresh one may belong to a caption write in flight (the tagger filling the folder).
    """
    now = time.time()
    for d in folders:
        for ext in CAPTION_EXTS:
            for p in d.glob(TMP_PREFIX + "*" + ext):
                try:
                    if p.is_file() and now - p.stat().st_mtime >= min_age_s:
                        p.unlink()
                except OSError:
                    pass


def load(folder: str | Path) -> TagStore:
    """Read every image's caption in ``folder``; finishes an interrupted save first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}", "give --input a folder of images with captions")
    warnings: list[str] = []
    images = find_images(folder)
    _clean_temp_files({folder, *(p.parent for p in images)})
    _finish_interrupted_save(folder, warnings)
    if not images:
        raise UserError(f"no images in {folder}", "point it at the folder that holds the images and captions")
    entries: dict[str, Entry] = {}
    for img in images:
        cap = caption_file(img)
        tags: list[str] = []
        if cap is not None:
            raw = cap.read_bytes()
            try:
                raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                warnings.append(f"{cap.name} is not UTF-8; read it as GB18030 — it is written as UTF-8 if edited")
            tags = ops.parse_tags(read_caption(img) or "")
        entries[img.relative_to(folder).as_posix()] = Entry(img, cap or img.with_suffix(".txt"), list(tags), list(tags))
    for w in warnings:
        log.warning("%s", w)
    return TagStore(folder, entries, warnings)
