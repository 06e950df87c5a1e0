"""JobRunner: one GPU job at a time, FIFO, state on disk, progress events, cancel.

The tab, the API and the CLI start work only through a runner. Each job has a folder
``<jobs_root>/<job-id>/`` with ``state.json`` (status, progress, config, error, result) and ``log.jsonl``
(one line per logged step). After a restart, jobs are listed from disk; those that were queued or running
when the process died are marked ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from . import paths
from .errors import Cancelled, UserError
from .workspace import json_safe, write_json

log = logging.getLogger("lora_trainer")

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED, INTERRUPTED = (
    "queued", "running", "finished", "failed", "cancelled", "interrupted")
DONE = (FINISHED, FAILED, CANCELLED, INTERRUPTED)


class JobContext:
    """What a job function receives: its folder, a cancel token, and progress/log reporting."""

    def __init__(self, runner: "JobRunner", job_id: str, job_dir: Path):
        self.runner, self.job_id, self.job_dir = runner, job_id, job_dir
        self.cancel_event = threading.Event()
        self._last_state_write = 0.0

    def should_stop(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancel(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()

    def progress(self, progress: Any) -> None:
        """Record progress (a dataclass or dict); state.json is rewritten at most twice a second."""
        data = asdict(progress) if is_dataclass(progress) else dict(progress)
        self.runner._update(self.job_id, progress=data, write=False)
        now = time.time()
        if now - self._last_state_write > 0.5 or data.get("step") == data.get("total"):
            self._last_state_write = now
            self.runner._write_state(self.job_id)
        self.runner._emit(self.job_id, "progress", data)

    def log(self, record: dict) -> None:
        with open(self.job_dir / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(json_safe(record), ensure_ascii=False) + "\n")


JobFn = Callable[[JobContext], Optional[dict]]


@dataclass
class _Pending:
    job_id: str
    fn: JobFn
    locked: bool = True


class JobRunner:
    """A single worker thread running submitted jobs in order."""

    def __init__(self, jobs_root: str | Path, lock: Optional[Any] = None, pattern: str = "*/state.json"):
        """``lock``: held around each job (the host adapter passes the WebUI's queue lock).
        Job folders are ``jobs_root/<id>`` unless ``submit`` gets a ``parent``; ``pattern`` (relative to
        ``jobs_root``) finds every job's state.json after a restart (``*/jobs/*/state.json`` for a workspace
        whose projects keep their own jobs/)."""
        self.root = Path(jobs_root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock = lock
        self.pattern = pattern
        self._dirs: dict[str, Path] = {}
        self._states: dict[str, dict] = {}
        self._contexts: dict[str, JobContext] = {}
        self._queue: "queue.Queue[Optional[_Pending]]" = queue.Queue()
        self._listeners: list[Callable[[str, str, dict], None]] = []
        self._mutex = threading.RLock()
        self._done = threading.Condition(self._mutex)
        self._announcing: set[str] = set()  # finished jobs whose listeners are still being told
        self._load_from_disk()
        self._thread = threading.Thread(target=self._work, name="lora-trainer-jobs", daemon=True)
        self._thread.start()

    # ---- public ----------------------------------------------------------------------------------
    def submit(self, kind: str, fn: JobFn, config: Optional[dict] = None, job_id: Optional[str] = None,
               parent: Optional[Path] = None, locked: bool = True) -> str:
        """Queue ``fn``. ``locked`` False: run it without the host's lock (a download must not hold the
        WebUI's queue, and so its txt2img, for minutes)."""
        job_id = job_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        job_dir = self._dirs.get(job_id) if parent is None else None
        job_dir = job_dir or Path(parent or self.root) / job_id
        self._dirs[job_id] = job_dir
        job_dir.mkdir(parents=True, exist_ok=True)
        with self._mutex:
            self._states[job_id] = {"id": job_id, "kind": kind, "status": QUEUED, "config": config or {},
                                    "progress": None, "error": None, "result": None, "created": time.time(),
                                    "started": None, "finished": None}
            self._contexts[job_id] = JobContext(self, job_id, job_dir)
            self._write_state(job_id)
        self._queue.put(_Pending(job_id, fn, locked))
        self._emit(job_id, "queued", {})
        return job_id

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job (it never starts) or a running one (it stops within a step, saving what it has)."""
        with self._mutex:
            st = self._states.get(job_id)
            if st is None or st["status"] in DONE:
                return False
            if st["status"] == QUEUED:
                self._finish(job_id, CANCELLED)
            else:
                self._contexts[job_id].cancel_event.set()
            return True

    def get(self, job_id: str) -> Optional[dict]:
        with self._mutex:
            st = self._states.get(job_id)
            return json.loads(json.dumps(json_safe(st))) if st else None

    def list(self) -> list[dict]:
        with self._mutex:
            return sorted((self.get(j) for j in self._states), key=lambda s: s["created"])

    def job_dir(self, job_id: str) -> Path:
        return self._dirs.get(job_id, self.root / job_id)

    def running(self) -> Optional[str]:
        with self._mutex:
            return next((j for j, s in self._states.items() if s["status"] == RUNNING), None)

    def wait(self, job_id: str, timeout: Optional[float] = None) -> dict:
        deadline = None if timeout is None else time.time() + timeout
        with self._done:
            while self._states[job_id]["status"] not in DONE or job_id in self._announcing:
                left = None if deadline is None else deadline - time.time()
                if left is not None and left <= 0:
                    raise TimeoutError(job_id)
                self._done.wait(left)
        return self.get(job_id)

    def subscribe(self, fn: Callable[[str, str, dict], None]) -> None:
        self._listeners.append(fn)

    def shutdown(self, cancel_running: bool = True, timeout: float = 30.0) -> None:
        if cancel_running:
            for j in [j for j, s in self._states.items() if s["status"] in (QUEUED, RUNNING)]:
                self.cancel(j)
        self._queue.put(None)
        self._thread.join(timeout)

    # ---- internals -------------------------------------------------------------------------------
    def _load_from_disk(self) -> None:
        for state_file in sorted(self.root.glob(self.pattern)):
            if paths.leads_out(state_file, [self.root]):  # a job folder linked from elsewhere is not ours
                continue
            try:
                st = json.loads(state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if st.get("status") in (QUEUED, RUNNING):
                st["status"] = INTERRUPTED
                st["finished"] = st.get("finished") or time.time()
                write_json(state_file, st)
            self._states[st["id"]] = st
            self._dirs[st["id"]] = state_file.parent

    def _write_state(self, job_id: str) -> None:
        with self._mutex:
            write_json(self.job_dir(job_id) / "state.json", self._states[job_id])

    def _update(self, job_id: str, write: bool = True, **fields: Any) -> None:
        with self._mutex:
            self._states[job_id].update(fields)
            if write:
                self._write_state(job_id)

    def _finish(self, job_id: str, status: str, **fields: Any) -> None:
        with self._mutex:  # the status and "still announcing" change together, so wait() never sees one alone
            self._announcing.add(job_id)
            self._update(job_id, status=status, finished=time.time(), **fields)
        self._emit(job_id, status, fields)  # outside the lock: wait() returning means listeners were told
        with self._done:
            self._announcing.discard(job_id)
            self._done.notify_all()

    def _emit(self, job_id: str, event: str, data: dict) -> None:
        for fn in list(self._listeners):
            try:
                fn(job_id, event, data)
            except Exception:  # noqa: BLE001 - a listener never breaks the runner
                log.exception("job listener failed (ignored)")

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            with self._mutex:
                if self._states[item.job_id]["status"] != QUEUED:
                    continue  # cancelled while queued
                self._update(item.job_id, status=RUNNING, started=time.time())
            self._emit(item.job_id, RUNNING, {})
            self._run(item)

    def _run(self, item: _Pending) -> None:
        ctx = self._contexts[item.job_id]
        try:
            if self.lock is not None and item.locked:
                with self.lock:
                    result = item.fn(ctx)
            else:
                result = item.fn(ctx)
        except Cancelled:
            self._finish(item.job_id, CANCELLED)
        except UserError as exc:
            self._finish(item.job_id, FAILED, error={"kind": "user", "message": exc.message, "hint": exc.hint})
        except BaseException as exc:  # noqa: BLE001 - a failing job never kills the runner
            (ctx.job_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
            msg = f"{type(exc).__name__}: {exc}"
            if "out of memory" in str(exc).lower():
                hint = "lower the batch size or resolution, or turn on gradient checkpointing"
            else:
                hint = f"this is a bug or an environment problem; details in {ctx.job_dir / 'error.log'}"
            self._finish(item.job_id, FAILED, error={"kind": "internal", "message": msg, "hint": hint})
        else:
            if not isinstance(result, dict):  # a job that returns a bare value still finishes, and the worker lives
                result = {} if result is None else {"value": result}
            status = CANCELLED if result.get("cancelled") else FINISHED
            self._finish(item.job_id, status, result=json_safe(result))
        finally:
            # The job's closure (and what it holds: a backend, a tagger's model) goes before the memory is
            # freed, so the GPU cache is really emptied, and it is not kept alive while the runner waits.
            item.fn = None
            _free_memory()


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass
