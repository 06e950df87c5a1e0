"""Path confinement: the one rule deciding which files a request, a tab action or a command may touch.

The rule: a path is used only if, with every symbolic link followed, it lies inside one of the allowed roots
(the workspace, ``serve --root`` folders, the folder a command was given). Links that stay inside are
followed; a link leading out is never read, written, listed, stat'ed or deleted through. A refusal is a
``PathRefused`` (a ``UserError`` carrying the HTTP status the API answers with; the CLI exits 2 and the tab
shows it like any other input error). Nothing here imports a face (no fastapi, no gradio).

Why resolve instead of checking names: a name can be perfectly plain (``evil``, ``photo.png``) and still be a
symlink to ``/etc``; only the resolved path says where a read or a write would land.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

from .errors import UserError


class PathRefused(UserError):
    """A path that leads outside the allowed roots (or is not where it is claimed to be)."""

    def __init__(self, message: str, hint: str = "", status: int = 403):
        super().__init__(message, hint)
        self.status = status


def resolved_roots(roots: Iterable[os.PathLike | str]) -> list[Path]:
    return [Path(os.path.abspath(r)).resolve() for r in roots]


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def inside(path: os.PathLike | str, roots: Iterable[os.PathLike | str]) -> bool:
    """True when ``path``, symlinks followed, lies inside (or is) one of ``roots`` (also resolved)."""
    return _within(Path(os.path.abspath(path)).resolve(), resolved_roots(roots))


def leads_out(path: os.PathLike | str, roots: Iterable[os.PathLike | str]) -> bool:
    """True when following ``path`` (a link, or a path through links) lands outside every root."""
    return not inside(path, roots)


def confine(path: os.PathLike | str, roots: Iterable[os.PathLike | str], what: str = "path",
            status: int = 403, hint: str = "") -> Path:
    """``path`` resolved (symlinks followed) if it lies inside a root; ``PathRefused`` otherwise.

    A path need not exist (a file about to be written): what exists of it is resolved, so a link among its
    parents is followed and judged too.
    """
    p = Path(os.path.abspath(path))
    target = p.resolve()
    if _within(target, resolved_roots(roots)):
        return target
    link = " (a symbolic link leads out)" if p != target or p.is_symlink() else ""
    raise PathRefused(f"{what} {str(path)!r} is outside the allowed folders{link}",
                      hint or "keep the files inside the workspace (copy them in rather than linking them)", status)


def child(folder: os.PathLike | str, name: str, what: str = "file", status: int = 404) -> Path:
    """``folder/name`` resolved if it stays inside ``folder`` (resolved); ``PathRefused`` (404: from the
    folder's point of view a name that escapes it is not there) otherwise."""
    folder = Path(folder)
    target = Path(os.path.abspath(folder / name)).resolve()
    if not _within(target, resolved_roots([folder])):
        raise PathRefused(f"{what} {name!r} not found", "use a name exactly as the list returns it", status)
    return target


def entries(folder: os.PathLike | str, roots: Optional[Iterable[os.PathLike | str]] = None,
            pattern: str = "*") -> list[Path]:
    """``folder``'s entries matching ``pattern`` (sorted), without those leading outside ``roots`` (default:
    ``folder`` itself), so a listing never stats, counts or shows a file through such a link."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    allowed = resolved_roots(roots if roots is not None else [folder])
    return sorted(p for p in folder.glob(pattern) if _within(Path(os.path.abspath(p)).resolve(), allowed))


def links_leading_out(folder: os.PathLike | str, roots: Optional[Iterable[os.PathLike | str]] = None
                      ) -> Iterator[Path]:
    """Every symbolic link under ``folder`` (the tree walked without following links) whose target is
    outside ``roots`` (default: ``folder``)."""
    allowed = resolved_roots(roots if roots is not None else [folder])
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(dirpath) / name
            if p.is_symlink() and not _within(p.resolve(), allowed):
                yield p


def check_tree(folder: os.PathLike | str, what: str, roots: Optional[Iterable[os.PathLike | str]] = None) -> None:
    """``PathRefused`` (400) naming the first link under ``folder`` leading outside it: a command given a
    folder reads and writes that folder only."""
    for link in links_leading_out(folder, roots):
        raise PathRefused(f"{what} {folder}: {link} is a symbolic link leading outside it",
                          f"copy {os.readlink(link)} into {folder} (or pass the folder it points into)", 400)


def remove_tree(path: os.PathLike | str, roots: Iterable[os.PathLike | str], what: str = "folder") -> None:
    """Delete ``path``: a link only loses the link (never what it points to); a real folder is deleted when
    it lies inside ``roots`` (``shutil.rmtree`` unlinks links inside it rather than following them)."""
    p = Path(path)
    if p.is_symlink():
        p.unlink()
        return
    confine(p, roots, what)
    shutil.rmtree(p)
