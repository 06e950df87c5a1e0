"""Caption editing over HTTP: the tag editor's functions (``lora_trainer.tags``) on a project's dataset.

HTTP is stateless, so each request loads the folder (``store.load``, which also finishes a save a crash
interrupted), applies ONE operation and saves it: the store's backup of the replaced captions is the undo.
A lock per folder keeps two requests from interleaving their load and save.

Only the images training reads are edited: the dataset folder's own images. The store also lists images
in direct subfolders (for a kohya root), which here would be the preparation's ``previews/``.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from typing import Optional

from .security import ApiError

_locks: "defaultdict[str, threading.Lock]" = defaultdict(threading.Lock)
_locks_guard = threading.Lock()


def folder_lock(folder: Path) -> threading.Lock:
    with _locks_guard:
        return _locks[str(folder)]


def _load(folder: Path):
    """(store, captions of the training images only)."""
    from ..tags import store

    st = store.load(folder)
    caps = {k: v for k, v in st.captions().items() if "/" not in k}
    return st, caps


def _known(caps: dict, keys) -> None:
    unknown = [k for k in keys if k not in caps]
    if unknown:
        raise ApiError(404, f"no image {unknown[0]!r} in the dataset", "use the image keys the captions route lists")


def read(folder: Path, flt: str = "") -> dict:
    from ..tags import ops

    st, caps = _load(folder)
    keys = ops.select(caps, flt or None)
    rows = ops.frequency(caps, keys)
    return {"images": [{"image": k, "tags": caps[k]} for k in keys],
            "frequency": [{"tag": r.tag, "count": r.count, "share": r.share} for r in rows],
            "warnings": list(st.warnings)}


def edit(folder: Path, captions: dict) -> dict:
    from ..tags import ops

    with folder_lock(folder):
        st, caps = _load(folder)
        _known(caps, captions)
        changed = st.apply({k: ops.as_list(v) for k, v in captions.items()}, "api edit")
        rep = st.save()
    return {"changed": changed, "selected": len(captions), "written": len(rep.written)}


def bulk(folder: Path, action: str, tags: list, to: str = "", flt: str = "", position: str = "back",
         trigger: str = "", keep_tokens: int = 0, by: str = "frequency") -> dict:
    from ..tags import ops

    names = ops.as_list(tags)
    if action in ("add", "remove", "replace") and not names:
        raise ApiError(400, f"{action}: no tags given", "list one or more tags in 'tags'")
    if action == "trigger" and not trigger.strip():
        raise ApiError(400, "trigger: no trigger word given", "set 'trigger'")
    with folder_lock(folder):
        st, caps = _load(folder)
        keys = ops.select(caps, flt or None)
        if action == "add":
            new = ops.bulk_add(caps, names, keys, position, keep_tokens)
        elif action == "remove":
            new = ops.bulk_remove(caps, names, keys)
        elif action == "replace":
            new = ops.bulk_replace(caps, names, to.strip(), keys)
        elif action == "dedupe":
            new = ops.bulk_dedupe(caps, keys)
        elif action == "trigger":
            new = ops.bulk_trigger_first(caps, trigger.strip(), keys)
        else:
            new = ops.bulk_sort(caps, keep_tokens, by, keys)
        changed = st.apply(new, f"api {action}")
        rep = st.save()
    return {"changed": changed, "selected": len(keys), "written": len(rep.written)}


def _background(background: Optional[str]) -> Optional[str]:
    return None if background in (None, "", "none") else background


def suggestions(folder: Path, background: Optional[str] = None, trigger: str = "") -> dict:
    from ..tags import rules

    _, caps = _load(folder)
    found = rules.suggest(caps, _background(background), trigger)
    return {"suggestions": [{**s.to_json(), "rule": s.rule} for s in found]}


def apply(folder: Path, chosen: Optional[list], background: Optional[str] = None, trigger: str = "",
          keep_tokens: Optional[int] = None, skip_rules: tuple = ()) -> dict:
    """Apply the approved ``chosen`` suggestions (``[{"image", "tag", "action"}]``); when None, every
    remove/add suggestion (less ``skip_rules``), with duplicates dropped and the trigger word first, as the
    pipeline's cleanup step does (``tags.cleanup``)."""
    from ..tags import ops, rules

    keep = (1 if trigger else 0) if keep_tokens is None else keep_tokens
    with folder_lock(folder):
        st, caps = _load(folder)
        flagged: list = []
        if chosen is None:
            found = [s for s in rules.suggest(caps, _background(background), trigger) if s.rule not in skip_rules]
            picked = [s for s in found if s.action in ("remove", "add")]
            flagged = [s.to_json() for s in found if s.action == "flag"]
            new = ops.bulk_dedupe(rules.apply_suggestions(caps, picked, keep))
            if trigger:
                new = ops.bulk_trigger_first(new, trigger)
        else:
            _known(caps, [c["image"] for c in chosen])
            picked = [rules.Suggestion(c["image"], c["tag"], c["action"], "", "api") for c in chosen]
            new = rules.apply_suggestions(caps, picked, keep)
        st.apply(new, "api suggestions")
        rep = st.save()
    return {"applied": [{"image": s.image, "tag": s.tag, "action": s.action, "reason": s.reason} for s in picked],
            "flagged": flagged, "written": len(rep.written)}
