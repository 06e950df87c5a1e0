"""Uploaded files into a project: saved under a temporary folder in the workspace, checked, then handed to
``Service.add_images`` (which decodes every image with the import step's checks, skips exact duplicates of
what the project has, copies the rest into ``source/`` and extracts zips with the importer's zip-slip and
zip-bomb guards; the answer names each refused or skipped file with its reason).

A client chooses the file names in a multipart upload, so a name is reduced to its last component and
never used as a path; everything lands inside the temporary folder. Limits are checked before the
project is touched: the request's size (already bounded by Content-Length, rechecked while streaming),
each zip's entry count and declared unpacked size (the importer stops copying an entry at its declared
size, so the declaration is binding), and the project's image count after the import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable, List

from .security import ApiError, ApiLimits

ACCEPTED = (".zip", ".txt", ".caption")


def image_exts() -> tuple:
    """What the import step takes (HEIC, TIFF and GIF too; the dataset it writes is PNG)."""
    from ..prepare.importer import SOURCE_IMAGE_EXTS

    return SOURCE_IMAGE_EXTS


def safe_upload_name(raw: str, index: int) -> str:
    """The last component of a client-supplied name, without control characters; a fallback when empty."""
    name = (raw or "").replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if ch >= " " and ch != "\x7f").strip()
    if name in ("", ".", "..") or name.startswith("."):
        name = f"upload-{index:04d}{Path(name).suffix if name not in ('.', '..') else ''}"
    return name[-200:]


def save_uploads(files: Iterable, folder: Path, limits: ApiLimits) -> tuple[List[Path], List[dict]]:
    """Stream each ``UploadFile`` into ``folder``; (saved paths, rejected report lines)."""
    accepted = set(image_exts()) | set(ACCEPTED)
    saved: List[Path] = []
    rejected: List[dict] = []
    total = 0
    for i, up in enumerate(files):
        name = safe_upload_name(getattr(up, "filename", "") or "", i)
        if Path(name).suffix.lower() not in accepted:
            from ..prepare.importer import VIDEO_EXTS, VIDEO_REASON

            reason = VIDEO_REASON if Path(name).suffix.lower() in VIDEO_EXTS else \
                f"not an image, zip or caption file ({', '.join(sorted(accepted))})"
            rejected.append({"file": name, "status": "skipped", "reason": reason})
            continue
        target = folder / name
        n = 2
        while target.exists():
            target = folder / f"{Path(name).stem}_{n}{Path(name).suffix}"
            n += 1
        with open(target, "wb") as out:
            while True:
                chunk = up.file.read(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > limits.max_upload_bytes:
                    raise ApiError(413, f"upload too large (limit {limits.max_upload_bytes} bytes)",
                                   "send fewer or smaller files per request")
                out.write(chunk)
        saved.append(target)
    return saved, rejected


def count_images(paths: Iterable[Path], limits: ApiLimits) -> int:
    """Images these files will add (zips counted by their image entries); ApiError 413 for an oversized zip."""
    exts = image_exts()
    n = 0
    for p in paths:
        if p.is_dir():
            n += sum(1 for _root, _dirs, names in os.walk(p) for f in names if Path(f).suffix.lower() in exts)
        elif p.suffix.lower() == ".zip":
            n += _zip_images(p, limits, exts)
        elif p.suffix.lower() in exts:
            n += 1
    return n


def _zip_images(path: Path, limits: ApiLimits, exts: tuple) -> int:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise ApiError(400, f"{path.name} is not a readable zip archive ({exc})", "check the file") from None
    if len(infos) > limits.max_zip_entries:
        raise ApiError(413, f"{path.name} has {len(infos)} entries (limit {limits.max_zip_entries})",
                       "split the archive")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > limits.max_unpacked_bytes:
        raise ApiError(413, f"{path.name} unpacks to {unpacked} bytes (limit {limits.max_unpacked_bytes})",
                       "split the archive")
    return sum(1 for i in infos if PurePosixPath(i.filename).suffix.lower() in exts)


def check_image_count(existing: int, adding: int, limits: ApiLimits) -> None:
    if existing + adding > limits.max_images:
        raise ApiError(413, f"too many images: the project has {existing}, this adds {adding}, the limit is "
                            f"{limits.max_images}", "delete images or start another project")


def import_files(service, name: str, files: Iterable, limits: ApiLimits) -> dict:
    """The upload route: save, check, copy into the project's ``source/``; the temporary folder is removed."""
    service.project(name)  # 404 before anything is written
    tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=service.workspace))
    try:
        saved, rejected = save_uploads(files, tmp, limits)
        check_image_count(len(service.images(name, "source")), count_images(saved, limits), limits)
        if saved:
            report = service.add_images(name, saved)
        else:
            report = {"copied": [], "rejected": [], "duplicates": [],
                      "source_images": service.project_info(name)["source_images"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**report, "rejected": rejected + report["rejected"]}


def import_path(service, name: str, source: Path, limits: ApiLimits) -> dict:
    """The server-side import route: ``source`` (already confined to the roots) into ``source/``."""
    service.project(name)
    if not source.exists():
        raise ApiError(404, f"{source.name!r} not found on the server", "check the path")
    check_image_count(len(service.images(name, "source")), count_images([source], limits), limits)
    return service.add_images(name, [source])
