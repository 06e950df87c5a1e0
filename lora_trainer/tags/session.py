"""What the tag editor tab does, without gradio: one open folder, the current image, and the actions.

``ui/edit_tags.py`` only wires widgets to these methods, so every button is tested here with plain values.
Every change goes through the store (one undo step per action); nothing is written until ``save``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from . import ops, rules, store as store_mod
from .translate import CJK, Translator, get_translator


class EditorSession:
    def __init__(self, st: store_mod.TagStore, translator: Optional[Translator] = None):
        self.store = st
        self.tr = translator or get_translator()
        self.current: Optional[str] = st.keys()[0] if len(st) else None
        self.suggestions: list[rules.Suggestion] = []

    @classmethod
    def open(cls, folder: str | Path) -> "EditorSession":
        if not str(folder).strip():
            raise UserError("no dataset folder", "prepare a dataset first, or type the folder that holds the images")
        return cls(store_mod.load(folder))

    # ------------------------------------------------------------------ images
    def image_keys(self, query: str = "") -> list[str]:
        """Images with a tag matching ``query`` in English or Chinese (all images for an empty query)."""
        if not query.strip():
            return self.store.keys()
        return [k for k in self.store.keys() if self.tr.search(query, self.store.tags(k))]

    def select(self, key: Optional[str]) -> None:
        if key in self.store.keys():
            self.current = key

    def step(self, delta: int, query: str = "") -> None:
        """Next/previous image among those the search shows (wraps around)."""
        keys = self.image_keys(query) or self.store.keys()
        if self.current in keys:
            self.current = keys[(keys.index(self.current) + delta) % len(keys)]
        else:
            self.current = keys[0] if delta > 0 else keys[-1]

    def image_path(self) -> Optional[str]:
        return str(self.store.image_path(self.current)) if self.current else None

    # ------------------------------------------------------------------ one image
    def tags(self) -> list[str]:
        return self.store.tags(self.current) if self.current else []

    def tag_choices(self) -> list[tuple[str, str]]:
        """(label with translation, tag) pairs for the checkbox list."""
        return [(self.tr.label(t), t) for t in self.tags()]

    def caption(self) -> str:
        return ops.join_tags(self.tags())

    def english(self, text: str) -> list[str]:
        """Tags typed in English pass through; a Chinese word becomes the dictionary's best English tag."""
        out = []
        for t in ops.parse_tags(text.replace("，", ",")):
            if CJK.search(t):
                hits = self.tr.english(t, limit=1)
                if not hits:
                    raise UserError(f"no tag translates to {t!r}", "type the English tag instead")
                t = hits[0]
            out.append(t)
        return out

    def _edit(self, new: Sequence[str], label: str) -> str:
        if not self.current:
            return "no image"
        n = self.store.set_tags(self.current, list(new), label)
        return f"{label}: {self.current}" if n else "nothing changed"

    def delete(self, tags: Sequence[str]) -> str:
        return self._edit(ops.remove(self.tags(), list(tags)), f"delete {', '.join(tags)}") if tags else "tick tags first"

    def add(self, text: str, position: str = "back", keep_tokens: int = 0) -> str:
        new = self.english(text)
        return self._edit(ops.add(self.tags(), new, position, keep_tokens), f"add {', '.join(new)}") if new else "type a tag"

    def move_front(self, tags: Sequence[str], keep_tokens: int = 0) -> str:
        cur = self.tags()
        for t in reversed(list(tags)):
            cur = ops.move(cur, t, keep_tokens, keep_tokens)
        return self._edit(cur, "move to front")

    def set_caption(self, text: str) -> str:
        return self._edit(ops.parse_tags(text), "edit caption")

    # ------------------------------------------------------------------ folder-wide
    def bulk(self, action: str, tags: str = "", flt: str = "", position: str = "back", to: str = "",
             trigger: str = "", keep_tokens: int = 0) -> str:
        caps = self.store.captions()
        keys = ops.select(caps, flt)
        names = self.english(tags) if action in ("add", "remove", "replace") else []
        if action in ("add", "remove", "replace") and not names:
            raise UserError("no tags given", "type one or more comma-separated tags")
        if action == "add":
            new = ops.bulk_add(caps, names, keys, position, keep_tokens)
        elif action == "remove":
            new = ops.bulk_remove(caps, names, keys)
        elif action == "replace":
            new = ops.bulk_replace(caps, names, ", ".join(self.english(to)) if to.strip() else "", keys)
        elif action == "dedupe":
            new = ops.bulk_dedupe(caps, keys)
        elif action == "trigger":
            if not trigger.strip():
                raise UserError("no trigger word", "type the trigger word first")
            new = ops.bulk_trigger_first(caps, trigger, keys)
        elif action == "sort":
            new = ops.bulk_sort(caps, keep_tokens, "frequency", keys)
        else:
            raise UserError(f"unknown action {action!r}", "use add, remove, replace, dedupe, trigger or sort")
        n = self.store.apply(new, f"{action} {', '.join(names)}".strip())
        return f"{action}: changed {n} of {len(keys)} selected images"

    def freq_rows(self, query: str = "", flt: str = "") -> list[list]:
        caps = self.store.captions()
        rows = ops.frequency(caps, ops.select(caps, flt))
        return [[r.tag, self.tr.zh(r.tag) or "", r.count, f"{r.share * 100:.0f}%"]
                for r in rows if self.tr.matches(r.tag, query)]

    # ------------------------------------------------------------------ suggestions
    def find_suggestions(self, background: Optional[str] = None, trigger: str = "") -> str:
        bg = None if background in (None, "", "none") else background
        self.suggestions = rules.suggest(self.store.captions(), bg, trigger)
        return f"{len(self.suggestions)} suggestion(s)"

    def suggestion_choices(self) -> list[tuple[str, str]]:
        out = []
        for i, s in enumerate(self.suggestions):
            what = f"{s.action} {self.tr.label(s.tag)}" if s.tag else s.action
            out.append((f"{s.image}: {what} — {s.reason}", str(i)))
        return out

    def approve(self, indices: Sequence[str] | None = None, keep_tokens: int = 0) -> str:
        """Apply the chosen suggestions (all remove/add ones when ``indices`` is None) as one undo step."""
        chosen = [self.suggestions[int(i)] for i in indices] if indices is not None else list(self.suggestions)
        chosen = [s for s in chosen if s.action in ("remove", "add")]
        n = self.store.apply(rules.apply_suggestions(self.store.captions(), chosen, keep_tokens), "apply suggestions")
        self.suggestions = [s for s in self.suggestions if s not in chosen]
        return f"applied {len(chosen)} suggestion(s) to {n} image(s)"

    # ------------------------------------------------------------------ history and disk
    def undo(self) -> str:
        label = self.store.undo()
        return f"undid: {label}" if label else "nothing to undo"

    def redo(self) -> str:
        label = self.store.redo()
        return f"redid: {label}" if label else "nothing to redo"

    def save(self) -> str:
        rep = self.store.save()
        if not rep.written:
            return "nothing to save"
        return f"saved {len(rep.written)} caption(s)" + (f"; previous ones in {rep.backup}" if rep.backup else "")

    def status(self) -> str:
        dirty = len(self.store.dirty_keys())
        pos = self.store.keys().index(self.current) + 1 if self.current else 0
        return (f"{self.store.folder} — image {pos}/{len(self.store)}"
                + (f" — {dirty} unsaved" if dirty else " — all saved"))
