"""Pure caption edits: one image's tag list, or a whole folder's ``{image_key: [tags]}``.

Nothing here touches the disk or keeps history: the store (``store.py``) applies the result of these
functions as one undoable step. Tags are compared by ``norm`` (case, spaces/underscores, ``\\(`` escapes),
so ``long_hair`` and ``Long Hair`` are the same tag, but they are written back as the user spelled them.

Two caption conventions from training are honoured everywhere (INTERFACES.md §3): the trigger word
stays first, and the first ``keep_tokens`` tags are never moved by an operation that reorders or inserts
at the front (kohya keeps them in place when it shuffles captions, so they must be the right ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

from ..errors import UserError
from ..training.data import split_tags

Captions = Mapping[str, Sequence[str]]
_ALPHA_RUN = re.compile(r"[A-Za-z]{2}")


def norm(tag: str) -> str:
    """The comparison form of a tag: lower case, single spaces, ``_`` as space (kaomoji like ``^_^`` kept)."""
    t = " ".join(tag.replace("\\(", "(").replace("\\)", ")").split()).lower()
    if _ALPHA_RUN.search(t):
        t = " ".join(t.replace("_", " ").split())
    return t


def parse_tags(text: str) -> list[str]:
    """``"a, b ,,c"`` -> ``["a", "b", "c"]`` (the caption format kohya and the WebUI read)."""
    return split_tags(" ".join(text.split()))


def join_tags(tags: Sequence[str]) -> str:
    return ", ".join(tags)


def as_list(tags: Iterable[str] | str) -> list[str]:
    """Accept ``"a, b"`` or ``["a", "b"]`` where a list of tags is expected."""
    return parse_tags(tags) if isinstance(tags, str) else [t.strip() for t in tags if t.strip()]


# --------------------------------------------------------------------------------------------- one caption

def dedupe(tags: Sequence[str]) -> list[str]:
    """Drop repeats (by ``norm``), keeping each tag's first place."""
    seen: set[str] = set()
    out = []
    for t in tags:
        k = norm(t)
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out


def add(tags: Sequence[str], new: Iterable[str] | str, position: str = "back", keep_tokens: int = 0) -> list[str]:
    """Add tags not already present; ``front`` inserts after the first ``keep_tokens`` tags."""
    if position not in ("front", "back"):
        raise UserError(f"unknown position {position!r}", "use front or back")
    present = {norm(t) for t in tags}
    fresh = [t for t in dedupe(as_list(new)) if norm(t) not in present]
    if position == "back":
        return list(tags) + fresh
    k = min(max(keep_tokens, 0), len(tags))
    return list(tags[:k]) + fresh + list(tags[k:])


def remove(tags: Sequence[str], drop: Iterable[str] | str) -> list[str]:
    gone = {norm(t) for t in as_list(drop)}
    return [t for t in tags if norm(t) not in gone]


def replace(tags: Sequence[str], old: Iterable[str] | str, new: str) -> list[str]:
    """Rename every tag in ``old`` to ``new`` in place (the first one's place); never leaves a duplicate."""
    olds = {norm(t) for t in as_list(old)}
    new = new.strip()
    if not new:
        return remove(tags, list(olds))
    out = [new if norm(t) in olds else t for t in tags]
    return dedupe(out) if any(norm(t) in olds for t in tags) else list(tags)


def move(tags: Sequence[str], tag: str, index: int, keep_tokens: int = 0) -> list[str]:
    """Move ``tag`` to ``index`` (clamped past the first ``keep_tokens`` unless it is one of them)."""
    k = norm(tag)
    pos = next((i for i, t in enumerate(tags) if norm(t) == k), None)
    if pos is None:
        return list(tags)
    rest = list(tags[:pos]) + list(tags[pos + 1:])
    lo = 0 if pos < keep_tokens else min(keep_tokens, len(rest))
    index = max(lo, min(index, len(rest)))
    return rest[:index] + [tags[pos]] + rest[index:]


def trigger_first(tags: Sequence[str], trigger: str) -> list[str]:
    """The trigger word as the first tag (moved there, or added), once."""
    trigger = trigger.strip()
    if not trigger:
        return list(tags)
    return [trigger] + remove(tags, [trigger])


def sort_tags(tags: Sequence[str], order: Optional[Mapping[str, int]] = None, keep_tokens: int = 0) -> list[str]:
    """Sort after the first ``keep_tokens`` tags: by ``order`` rank (e.g. frequency) then alphabetically."""
    head, tail = list(tags[:keep_tokens]), list(tags[keep_tokens:])
    rank = order or {}
    tail.sort(key=lambda t: (rank.get(norm(t), len(rank)), norm(t)))
    return head + tail


# --------------------------------------------------------------------------------------------- filters

@dataclass(frozen=True)
class Filter:
    """A parsed tag filter: call it with an image's tags. ``node`` is a small tuple tree."""

    node: tuple
    text: str = ""

    def __call__(self, tags: Iterable[str]) -> bool:
        return _eval(self.node, {norm(t) for t in tags})

    def __str__(self) -> str:
        return self.text


MATCH_ALL = Filter(("all",), "")


def _eval(node: tuple, have: set[str]) -> bool:
    op = node[0]
    if op == "all":
        return True
    if op == "tag":
        return node[1] in have
    if op == "not":
        return not _eval(node[1], have)
    if op == "and":
        return all(_eval(n, have) for n in node[1])
    return any(_eval(n, have) for n in node[1])


_OP = re.compile(r"(AND|OR|NOT)(?=[\s(]|$)")


def _tokens(expr: str) -> list:
    """Split into ``(``, ``)``, AND, OR, NOT and tag terms; a comma means AND.

    Tag names may contain spaces and balanced parentheses (``hood (clothing)``), so a ``(`` opens a group
    only where a term could start, and a ``)`` closes one only outside a term's own parentheses.
    """
    out: list = []
    i, n, expecting = 0, len(expr), True
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "(" and expecting:
            out.append("(")
            i += 1
        elif c == ")":
            out.append(")")
            i += 1
            expecting = False
        elif c == ",":
            out.append("AND")
            i += 1
            expecting = True
        elif _OP.match(expr, i) and (expecting or expr[i - 1].isspace()):
            word = _OP.match(expr, i).group(1)
            out.append(word)
            i += len(word)
            expecting = True
        else:
            j, depth = i, 0
            while j < n:
                ch = expr[j]
                if ch == "(":
                    depth += 1
                elif ch == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif depth == 0 and (ch == "," or (ch.isspace() and re.match(r"\s+(AND|OR|NOT)(?=[\s(]|$)", expr[j:]))):
                    break
                j += 1
            out.append(("term", expr[i:j].strip()))
            i, expecting = j, False
    return out


def parse_filter(expr: Optional[str]) -> Filter:
    """``"1girl AND (smile OR grin) AND NOT hat"``; ``"a, b"`` = ``a AND b``; empty = every image.

    Precedence NOT > AND > OR. Operators are upper case so tags such as ``black and white`` stay tags.
    """
    text = (expr or "").strip()
    if not text:
        return MATCH_ALL
    toks = _tokens(text)
    pos = 0

    def bad(why: str) -> UserError:
        return UserError(f"bad tag filter {text!r}: {why}",
                         "write tags joined by AND, OR, NOT and parentheses, e.g. '1girl AND NOT hat'")

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def p_or():
        parts = [p_and()]
        while peek() == "OR":
            take()
            parts.append(p_and())
        return parts[0] if len(parts) == 1 else ("or", tuple(parts))

    def p_and():
        parts = [p_not()]
        while peek() == "AND":
            take()
            parts.append(p_not())
        return parts[0] if len(parts) == 1 else ("and", tuple(parts))

    def p_not():
        if peek() == "NOT":
            take()
            return ("not", p_not())
        return p_atom()

    def p_atom():
        t = peek()
        if t is None:
            raise bad("it ends where a tag was expected")
        take()
        if t == "(":
            node = p_or()
            if take_if(")"):
                return node
            raise bad("a '(' is not closed")
        if isinstance(t, tuple) and t[1]:
            return ("tag", norm(t[1]))
        raise bad(f"unexpected {t if isinstance(t, str) else t[1]!r}")

    def take_if(tok) -> bool:
        if peek() == tok:
            take()
            return True
        return False

    node = p_or()
    if pos != len(toks):
        raise bad(f"unexpected {toks[pos] if isinstance(toks[pos], str) else toks[pos][1]!r}")
    return Filter(node, text)


def make_filter(all_of: Iterable[str] | str = (), any_of: Iterable[str] | str = (),
                none_of: Iterable[str] | str = ()) -> Filter:
    """The form's three boxes (must have all / any of / none of) as one Filter."""
    parts: list[tuple] = [("tag", norm(t)) for t in as_list(all_of)]
    anys = [("tag", norm(t)) for t in as_list(any_of)]
    if anys:
        parts.append(("or", tuple(anys)))
    parts += [("not", ("tag", norm(t))) for t in as_list(none_of)]
    if not parts:
        return MATCH_ALL
    return Filter(parts[0] if len(parts) == 1 else ("and", tuple(parts)), "")


def as_filter(f: Filter | str | None | Callable[[Iterable[str]], bool]):
    return parse_filter(f) if f is None or isinstance(f, str) else f


def select(caps: Captions, flt: Filter | str | None = None) -> list[str]:
    """Keys of the images whose tags pass the filter, in the captions' order."""
    f = as_filter(flt)
    return [k for k, tags in caps.items() if f(tags)]


# --------------------------------------------------------------------------------------------- folder-wide

def _bulk(caps: Captions, fn: Callable[[Sequence[str]], list[str]], keys: Optional[Iterable[str]]) -> dict[str, list[str]]:
    chosen = set(caps) if keys is None else set(keys)
    return {k: (fn(v) if k in chosen else list(v)) for k, v in caps.items()}


def bulk_add(caps: Captions, tags: Iterable[str] | str, keys: Optional[Iterable[str]] = None,
             position: str = "back", keep_tokens: int = 0) -> dict[str, list[str]]:
    new = as_list(tags)
    return _bulk(caps, lambda t: add(t, new, position, keep_tokens), keys)


def bulk_remove(caps: Captions, tags: Iterable[str] | str, keys: Optional[Iterable[str]] = None) -> dict[str, list[str]]:
    drop = as_list(tags)
    return _bulk(caps, lambda t: remove(t, drop), keys)


def bulk_replace(caps: Captions, old: Iterable[str] | str, new: str,
                 keys: Optional[Iterable[str]] = None) -> dict[str, list[str]]:
    olds = as_list(old)
    return _bulk(caps, lambda t: replace(t, olds, new), keys)


def bulk_dedupe(caps: Captions, keys: Optional[Iterable[str]] = None) -> dict[str, list[str]]:
    return _bulk(caps, dedupe, keys)


def bulk_trigger_first(caps: Captions, trigger: str, keys: Optional[Iterable[str]] = None) -> dict[str, list[str]]:
    return _bulk(caps, lambda t: trigger_first(t, trigger), keys)


def bulk_sort(caps: Captions, keep_tokens: int = 0, by: str = "frequency",
              keys: Optional[Iterable[str]] = None) -> dict[str, list[str]]:
    """Sort every caption's tags (after ``keep_tokens``) by folder frequency, or alphabetically (``alpha``)."""
    order = {r.key: i for i, r in enumerate(frequency(caps))} if by == "frequency" else {}
    return _bulk(caps, lambda t: sort_tags(t, order, keep_tokens), keys)


@dataclass(frozen=True)
class FreqRow:
    tag: str      # the most common spelling
    key: str      # norm(tag)
    count: int    # images that have it
    share: float  # count / images considered


def frequency(caps: Captions, keys: Optional[Iterable[str]] = None) -> list[FreqRow]:
    """Tags by number of images that carry them (a repeat within a caption counts once), then by name."""
    chosen = list(caps) if keys is None else [k for k in keys if k in caps]
    counts: dict[str, int] = {}
    spellings: dict[str, dict[str, int]] = {}
    for k in chosen:
        seen = set()
        for t in caps[k]:
            n = norm(t)
            sp = spellings.setdefault(n, {})
            sp[t] = sp.get(t, 0) + 1
            if n not in seen:
                seen.add(n)
                counts[n] = counts.get(n, 0) + 1
    total = max(len(chosen), 1)
    rows = [FreqRow(max(spellings[n].items(), key=lambda kv: (kv[1], kv[0]))[0], n, c, c / total)
            for n, c in counts.items()]
    rows.sort(key=lambda r: (-r.count, r.key))
    return rows


def changed_keys(before: Captions, after: Captions) -> list[str]:
    return [k for k in after if list(before.get(k, ())) != list(after[k])]
