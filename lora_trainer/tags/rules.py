"""Cleanup suggestions: the rules our users apply by hand, as data tables plus pure functions.

Each rule looks at one image's tags and says what to remove, add or look at, and why:
- ``facial features`` (and any other group in ``remove.json``): the subject's own face → remove, so it binds
  to the trigger word; tags in ``keep.json`` (expression, pose, changeable attributes) are never removed
  by these groups;
- ``implied``: a tag implied by a more specific one on the same image (``implications.json``);
- ``subject``: no gender/count tag (``subject.json``) → flagged;
- ``background``: background tags that disagree with the background the preparation step produced.

The tables ship in ``data/rules/``; a user folder with files of the same names is merged over them
(lists add entries, ``!tag`` drops a shipped one; dicts merge by key). Suggestions are shown first and
applied only on approval (``apply_suggestions``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from ..errors import UserError
from . import ops

DATA_DIR = Path(__file__).parent / "data" / "rules"
TABLES = ("remove", "keep", "implications", "subject", "background")
USER_RULES_ENV = "LORA_TRAINER_TAG_RULES"
ACTIONS = ("remove", "add", "flag")


@dataclass(frozen=True)
class Suggestion:
    image: str
    tag: str
    action: str   # remove | add | flag
    reason: str
    rule: str     # the table/group it came from

    def to_json(self) -> dict:
        return {"image": self.image, "tag": self.tag, "action": self.action, "reason": self.reason}


class _Matcher:
    """Exact tags plus ``*`` patterns, compared in ``ops.norm`` form."""

    def __init__(self, entries: Iterable[str]):
        self.exact: set[str] = set()
        pats = []
        for e in entries:
            n = ops.norm(e)
            if "*" in n:
                pats.append(re.escape(n).replace(r"\*", ".*"))
            else:
                self.exact.add(n)
        self.pattern = re.compile("^(?:" + "|".join(pats) + ")$") if pats else None

    def __contains__(self, key: str) -> bool:
        return key in self.exact or bool(self.pattern and self.pattern.match(key))


@dataclass
class RuleTables:
    remove: dict[str, tuple[str, _Matcher]]
    keep: dict[str, tuple[str, _Matcher]]
    implies: dict[str, list[str]]
    modifiers: list[str]
    count_tags: set[str]
    subject_reason: str
    scene: _Matcher
    colours: dict[str, tuple[int, int, int]]
    simple: list[str]
    transparent: list[str]
    _closure: dict[str, frozenset] = field(default_factory=dict, repr=False)

    def group_of(self, tag: str) -> Optional[tuple[str, str]]:
        """``("keep", group)`` or ``("remove", group)`` for a tag the tables know, else None (keep wins)."""
        k = ops.norm(tag)
        for g, (_, m) in self.keep.items():
            if k in m:
                return "keep", g
        for g, (_, m) in self.remove.items():
            if k in m:
                return "remove", g
        return None

    def implied_by(self, tag: str) -> frozenset:
        """Every tag ``tag`` implies, transitively, in norm form."""
        k = ops.norm(tag)
        if k not in self._closure:
            self._closure[k] = frozenset()  # guards against cycles in user tables
            out: set[str] = set()
            for t in self.implies.get(k, ()):
                out.add(t)
                out |= self.implied_by(t)
            self._closure[k] = frozenset(out - {k})
        return self._closure[k]


# --------------------------------------------------------------------------------------------- loading

def _merge(base, extra):
    """Merge a user table over a shipped one: dicts by key, lists add entries (``!x`` removes ``x``)."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for k, v in extra.items():
            if k in base:
                out[k] = _merge(base[k], v)
            elif isinstance(v, (list, dict)):
                out[k] = _merge(type(v)(), v)
            else:
                out[k] = v
        return out
    if isinstance(base, list) and isinstance(extra, list):
        drop = {ops.norm(x[1:]) for x in extra if isinstance(x, str) and x.startswith("!")}
        out = [x for x in base if not (isinstance(x, str) and ops.norm(x) in drop)]
        out += [x for x in extra if not (isinstance(x, str) and x.startswith("!")) and x not in out]
        return out
    return extra


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"rules table {path} is not valid JSON: {exc}", "fix the file or remove it") from None


def _hex(c: str) -> tuple[int, int, int]:
    c = c.strip().lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", c):
        raise UserError(f"not a colour: #{c}", "write colours as #RRGGBB")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _groups(raw: dict) -> dict[str, tuple[str, _Matcher]]:
    return {g: (v.get("reason", g), _Matcher(v.get("tags", []))) for g, v in raw.items()
            if not g.startswith("_") and isinstance(v, dict)}


def load_tables(user_dir: str | os.PathLike | None = None) -> RuleTables:
    """The shipped tables, with ``user_dir`` (default: ``$LORA_TRAINER_TAG_RULES``) merged over them."""
    user = user_dir if user_dir is not None else os.environ.get(USER_RULES_ENV) or None
    if user is not None and not Path(user).is_dir():
        raise UserError(f"rules folder not found: {user}", f"create it with any of {', '.join(TABLES)} .json files")
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                  for p in sorted(Path(user).glob("*.json"))) if user else ()
    return _load(str(user) if user else "", stamp)


@lru_cache(maxsize=8)
def _load(user: str, stamp: tuple = ()) -> RuleTables:
    """Cached per user folder and the state of its files (an edited table is read again)."""
    raw = {}
    for name in TABLES:
        data = _read(DATA_DIR / f"{name}.json")
        if user and (Path(user) / f"{name}.json").is_file():
            data = _merge(data, _read(Path(user) / f"{name}.json"))
        raw[name] = data
    imp = raw["implications"]
    bg = raw["background"]
    return RuleTables(
        remove=_groups(raw["remove"]), keep=_groups(raw["keep"]),
        implies={ops.norm(k): [ops.norm(x) for x in v] for k, v in imp.get("implies", {}).items()},
        modifiers=sorted({ops.norm(m) for m in imp.get("modifiers", [])}, key=len, reverse=True),
        count_tags={ops.norm(t) for t in raw["subject"].get("count_tags", [])},
        subject_reason=raw["subject"].get("reason", "no gender/count tag"),
        scene=_Matcher(bg.get("scene", [])),
        colours={ops.norm(k): _hex(v) for k, v in bg.get("colours", {}).items()},
        simple=[ops.norm(t) for t in bg.get("simple", [])],
        transparent=[ops.norm(t) for t in bg.get("transparent", [])])


# --------------------------------------------------------------------------------------------- background

def background_tags(background: Optional[str], tables: RuleTables) -> Optional[tuple[list[str], set[str]]]:
    """What the caption should say about a prepared background: (tags to have, tags also allowed).

    ``background``: None/"none"/"keep" (no rule), "white", "transparent"/"alpha", a colour name of the
    table, or ``#RRGGBB`` (the nearest colour of the table).
    """
    if background is None:
        return None
    b = ops.norm(background)
    if b in ("", "none", "keep", "original"):
        return None
    if b in ("transparent", "alpha"):
        return list(tables.transparent), set(tables.simple)
    if b.startswith("#"):
        rgb = _hex(b)
        b = min(tables.colours, key=lambda c: sum((x - y) ** 2 for x, y in zip(tables.colours[c], rgb)))
    if b not in tables.colours:
        raise UserError(f"unknown background {background!r}",
                        f"use none, transparent, #RRGGBB or one of: {', '.join(sorted(tables.colours))}")
    return [f"{b} background"] + list(tables.simple), set()


# --------------------------------------------------------------------------------------------- rules

def _redundant(keys: Sequence[str], tables: RuleTables) -> dict[str, str]:
    """``{vague_tag: the specific tag that implies it}`` for one image."""
    have = set(keys)
    out: dict[str, str] = {}
    for k in keys:
        if k in out:  # already redundant: it cannot make another tag redundant (synonym cycles keep one)
            continue
        implied = set(tables.implied_by(k))
        for m in tables.modifiers:
            if k.startswith(m + " ") and len(k) > len(m) + 1:
                rest = k[len(m) + 1:]
                implied.add(rest)
                implied |= tables.implied_by(rest)
        for v in implied:
            if v in have and v != k and v not in out:
                out[v] = k
    return out


def suggest_for(tags: Sequence[str], tables: RuleTables, background: Optional[str] = None,
                trigger: str = "") -> list[tuple[str, str, str, str]]:
    """``(tag, action, reason, rule)`` for one image's tags. The trigger word is never touched."""
    keys = [ops.norm(t) for t in tags]
    spelled = dict(zip(keys, tags))
    protected = {ops.norm(trigger)} if trigger.strip() else set()
    out: list[tuple[str, str, str, str]] = []
    done: set[str] = set()

    def emit(key: str, action: str, reason: str, rule: str) -> None:
        if key in protected or (action == "remove" and key in done):
            return
        done.add(key)
        out.append((spelled.get(key, key), action, reason, rule))

    bg = background_tags(background, tables)
    if bg is not None:
        want, allowed = bg
        for k in keys:
            if k in tables.scene and k not in want and k not in allowed:
                emit(k, "remove", f"the background was replaced ({background}); this tag describes the old one",
                     "background")
        for w in want:
            if w not in keys:
                emit(w, "add", f"the prepared image has this background ({background})", "background")
    for k in keys:
        g = tables.group_of(k)
        if g and g[0] == "remove":
            emit(k, "remove", tables.remove[g[1]][0], g[1])
    for vague, specific in _redundant(keys, tables).items():
        emit(vague, "remove", f"implied by the more specific '{spelled.get(specific, specific)}'", "implied")
    if not any(k in tables.count_tags for k in keys):
        out.append(("", "flag", tables.subject_reason, "subject"))
    return out


def suggest(caps: Mapping[str, Sequence[str]], background: Optional[str] = None, trigger: str = "",
            tables: Optional[RuleTables] = None, keys: Optional[Iterable[str]] = None) -> list[Suggestion]:
    """Every suggestion for the images (all, or ``keys``), image by image in the captions' order."""
    tables = tables or load_tables()
    chosen = set(caps) if keys is None else set(keys)
    return [Suggestion(k, tag, action, reason, rule)
            for k, tags in caps.items() if k in chosen
            for tag, action, reason, rule in suggest_for(tags, tables, background, trigger)]


def apply_suggestions(caps: Mapping[str, Sequence[str]], suggestions: Iterable[Suggestion],
                      keep_tokens: int = 0) -> dict[str, list[str]]:
    """The captions with the approved suggestions applied (flags change nothing; adds go at the back)."""
    out = {k: list(v) for k, v in caps.items()}
    for s in suggestions:
        if s.image not in out or s.action not in ACTIONS:
            continue
        if s.action == "remove":
            out[s.image] = ops.remove(out[s.image], [s.tag])
        elif s.action == "add":
            out[s.image] = ops.add(out[s.image], [s.tag], "back", keep_tokens)
    return out
