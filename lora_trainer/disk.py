"""What a project holds on disk, by kind, and the cleanup of the kinds a user can do without.

Pure file work on a project folder (``<workspace>/<name>/``, INTERFACES §2), no torch: ``Service.disk_usage``
and ``Service.cleanup`` call it, the tab's "Disk" line and the API's ``/projects/{name}/disk`` show it.
Nothing here follows a symlink: sizes are ``lstat`` sizes, a link is never entered, and deleting a link
deletes the link only (what it points to, perhaps outside the workspace, is never touched).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Optional

# Every byte of a project falls in exactly one of these (the API's and the tab's order).
CATEGORIES = ("source", "dataset", "outputs", "intermediate", "state", "caches", "jobs", "host_copies")
# What cleanup may delete. ``outputs`` (the final LoRA files), ``source`` (the user's photos) and ``dataset``
# (prepared images and edited captions) only when named; ``jobs`` (logs, samples, test images: the records
# the tab and the API list) never.
CLEANABLE = ("state", "caches", "intermediate", "host_copies", "outputs", "dataset", "source")
DEFAULT_CLEANUP = ("state", "caches", "host_copies")
HELP = {
    "source": "the photos you added (source/)",
    "dataset": "prepared images and captions (dataset/)",
    "outputs": "final LoRA files and their .json sidecars (output/)",
    "intermediate": "intermediate saves (output/<name>-stepNNNNNN / -NNNNNN), the Test grid's rows",
    "state": "resume state of jobs (jobs/*/state/), needed only to resume a cancelled or interrupted run",
    "caches": "latents kept on disk (jobs/*/latents/) and gallery thumbnails (cache/): rebuilt when needed",
    "jobs": "job logs, samples and test images (jobs/*/)",
    "host_copies": "test copies of this project's LoRA files in the WebUI's Lora folder (lora_trainer_tests/)",
}

_INTERMEDIATE = re.compile(r"^.+-(step\d{6,}|\d{6,})$")


def is_intermediate(path: Path) -> bool:
    """``<name>-step000400.safetensors`` (a save fraction) or ``<name>-000002.safetensors`` (every N epochs),
    as the trainer names them. Only a final file gets a ``.json`` sidecar: a final LoRA whose name happens to
    end in six digits is never taken for an intermediate save."""
    return path.suffix == ".safetensors" and bool(_INTERMEDIATE.match(path.stem)) \
        and not path.with_suffix(".json").exists()


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (or of ``path`` itself), links counted as links, never entered."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_size
    total = 0
    for root, dirs, files in os.walk(path):  # os.walk does not follow links into folders by default
        for f in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def remove(path: Path) -> int:
    """Delete ``path`` (a file, a link, or a folder tree without following links); the bytes freed."""
    size = tree_bytes(path)
    if os.path.islink(path) or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        return 0
    return size


def output_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(final LoRA files with their sidecars, intermediate saves) in ``<project>/output/``."""
    out = root / "output"
    finals, inter = [], []
    if out.is_dir():
        for f in sorted(out.iterdir()):
            if is_intermediate(f):
                inter.append(f)
            elif not f.name.startswith("."):
                finals.append(f)
    return finals, inter


def job_parts(root: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """({job id: [its state/ and latents/ folders]}, [the rest of every job folder])."""
    parts: dict[str, list[Path]] = {}
    rest: list[Path] = []
    jobs = root / "jobs"
    if jobs.is_dir():
        for job in sorted(p for p in jobs.iterdir() if p.is_dir() and not p.is_symlink()):
            for child in job.iterdir():
                if child.name in ("state", "latents") and not child.is_symlink():
                    parts.setdefault(job.name, []).append(child)
                else:
                    rest.append(child)
    return parts, rest


def usage(root: Path, host_copies: Iterable[Path] = ()) -> dict:
    """``{"bytes": {category: n}, "total": n, "help": HELP}`` for the project folder ``root``; ``host_copies``
    are files outside it that belong to it (test copies in the WebUI's Lora folder)."""
    finals, inter = output_files(root)
    parts, rest = job_parts(root)
    state = [p for ps in parts.values() for p in ps if p.name == "state"]
    latents = [p for ps in parts.values() for p in ps if p.name == "latents"]
    sizes = {
        "source": tree_bytes(root / "source"),
        "dataset": tree_bytes(root / "dataset"),
        "outputs": sum(tree_bytes(p) for p in finals),
        "intermediate": sum(tree_bytes(p) for p in inter),
        "state": sum(tree_bytes(p) for p in state),
        "caches": sum(tree_bytes(p) for p in latents) + tree_bytes(root / "cache"),
        "jobs": sum(tree_bytes(p) for p in rest),
        "host_copies": sum(tree_bytes(Path(p)) for p in host_copies),
    }
    return {"bytes": sizes, "total": sum(sizes.values()), "help": dict(HELP)}


def clean(root: Path, what: Iterable[str], busy_jobs: Iterable[str] = (),
          host_copies: Iterable[Path] = ()) -> dict:
    """Delete the categories ``what`` of the project folder ``root``; ``{category: bytes freed}``. The state and
    latents of ``busy_jobs`` (queued or running) stay. ``what`` must be a subset of ``CLEANABLE`` (the caller
    validates it: ``check_what``). ``host_copies`` are deleted whatever ``what`` says: the caller passes the
    copies of the files that go (they could not be found once their file is gone) or, for ``host_copies``, all."""
    what = check_what(what)
    busy = set(busy_jobs)
    freed = {w: 0 for w in what}
    finals, inter = output_files(root)
    parts, _rest = job_parts(root)
    copies = [Path(p) for p in host_copies]
    if copies or "host_copies" in what:
        freed["host_copies"] = sum(remove(p) for p in copies)
    if "state" in what:
        freed["state"] = sum(remove(p) for j, ps in parts.items() if j not in busy for p in ps if p.name == "state")
    if "caches" in what:
        freed["caches"] = sum(remove(p) for j, ps in parts.items() if j not in busy for p in ps
                              if p.name == "latents") + remove(root / "cache")
    if "intermediate" in what:
        freed["intermediate"] = sum(remove(p) for p in inter)
    if "outputs" in what:
        freed["outputs"] = sum(remove(p) for p in finals)
    for folder in ("dataset", "source"):
        if folder in what:
            freed[folder] = sum(remove(p) for p in sorted((root / folder).iterdir())) \
                if (root / folder).is_dir() and not (root / folder).is_symlink() else 0
    return freed


def check_what(what: Optional[Iterable[str]]) -> list[str]:
    """The categories to clean, validated (None: ``DEFAULT_CLEANUP``); raises UserError naming the bad one."""
    from .errors import UserError

    names = list(DEFAULT_CLEANUP if what is None else what)
    for w in names:
        if w not in CLEANABLE:
            raise UserError(f"cannot clean {w!r}", "name some of: " + ", ".join(CLEANABLE))
    if not names:
        raise UserError("nothing to clean", "name some of: " + ", ".join(CLEANABLE))
    return list(dict.fromkeys(names))


def human(n: float) -> str:
    """``1.6 GB``, ``147 MB``, ``12 KB``, ``0 B`` (decimal units, as file managers show them)."""
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit != "MB" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB" if n < 100 else f"{n:.0f} GB"
