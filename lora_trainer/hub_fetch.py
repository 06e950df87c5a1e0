"""Hub-hosted files through ``huggingface_hub`` (the project keeps libraries over hand-written code), where it
is installed — the WebUI venvs have it. The model store keeps its guarantees around the library: the file is
fetched into a staging folder (``<folder>/.download``, the library's ``local_dir``, whose ``.incomplete`` file
the library resumes with a ``Range`` request), the store checks the sha256 itself and only then moves it
under its final name.

Works with the 0.36 of WebUI 1.10 and the 1.x/2.x of a standalone install: ``tqdm_class=`` (progress and
Cancel at every chunk) exists in the newer ones only; on the older the ``.incomplete`` file's size is polled
for progress, and Cancel takes effect when the current file ends (the finished file waits in the staging
folder, so nothing is fetched twice). ``LORA_TRAINER_NO_HF_HUB=1`` forces the store's own client.
"""

from __future__ import annotations

import inspect
import os
import re
import threading
from pathlib import Path
from typing import Callable, Optional

STAGING = ".download"


def available() -> bool:
    if os.environ.get("LORA_TRAINER_NO_HF_HUB", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return False
    return True


def split_url(url: str, endpoint: str) -> Optional[tuple[str, str, str]]:
    """``(repo, revision, filename)`` of ``{endpoint}/{owner}/{name}/resolve/{rev}/{path}``, else None."""
    m = re.fullmatch(re.escape(endpoint) + r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", url)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _sync_offline() -> None:
    """The library reads HF_HUB_OFFLINE once, at import; the store reads it at each call (the caller has
    already refused when it is set), so the library follows the environment as it is now."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = False


def is_http_error(exc: BaseException) -> Optional[int]:
    """The HTTP status of a library error that is the server's answer (404, 401 …), else None."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None:
        return int(exc.response.status_code)
    return None


def cancels_midfile() -> bool:
    """Whether Cancel stops the library inside a file (``tqdm_class=``, huggingface_hub 0.3x lacks it)."""
    from huggingface_hub import hf_hub_download

    return "tqdm_class" in inspect.signature(hf_hub_download).parameters


def partial_files(folder: Path) -> list[Path]:
    """The library's partial downloads for ``folder`` (its ``.incomplete`` files in the staging folder)."""
    cache = staging_dir(folder) / ".cache"
    return sorted(cache.rglob("*.incomplete")) if cache.is_dir() else []


def staging_dir(folder: Path) -> Path:
    return folder / STAGING


def download(repo: str, revision: str, filename: str, folder: Path, endpoint: str, timeout: float,
             on_bytes: Callable[[int], None], should_stop: Callable[[], bool], cancelled: Callable[[], Exception]
             ) -> Path:
    """Fetch one file into ``folder/.download`` with ``hf_hub_download``; the staged file's path."""
    from huggingface_hub import hf_hub_download

    _sync_offline()
    local = staging_dir(folder)
    local.mkdir(parents=True, exist_ok=True)
    kwargs = dict(revision=revision, local_dir=str(local), endpoint=endpoint, etag_timeout=timeout)
    if cancels_midfile():
        kwargs["tqdm_class"] = _bar_class(on_bytes, should_stop, cancelled)
        return Path(hf_hub_download(repo, filename, **kwargs))
    # older library: poll the .incomplete file's size from a thread
    done = threading.Event()
    seen = {"n": 0}

    def poll() -> None:
        while not done.wait(0.1):
            parts = partial_files(folder)
            size = max((p.stat().st_size for p in parts if p.exists()), default=0)
            if size > seen["n"]:
                on_bytes(size - seen["n"])
                seen["n"] = size

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        path = Path(hf_hub_download(repo, filename, **kwargs))
    finally:
        done.set()
        t.join()
    size = path.stat().st_size
    if size > seen["n"]:
        on_bytes(size - seen["n"])
    return path


def _bar_class(on_bytes, should_stop, cancelled):
    from tqdm.auto import tqdm

    class Bar(tqdm):
        """The library's progress bar: reports bytes to the store, and stops the download on Cancel."""

        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # the store draws its own bar
            super().__init__(*args, **kwargs)
            if kwargs.get("initial"):
                on_bytes(int(kwargs["initial"]))

        def update(self, n=1):  # called before the chunk is written: stop first, then count it
            if should_stop():
                raise cancelled()
            on_bytes(int(n or 0))
            return super().update(n)

    return Bar
