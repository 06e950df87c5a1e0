"""Jobs inside the WebUI: the host's queue lock around each job, its progress bar and Interrupt button.

``HostJobLock`` is what the ``JobRunner`` holds around every job. Entering it takes the WebUI's
``call_queue.queue_lock`` (txt2img, the API and our jobs queue behind each other, FIFO), then claims
``shared.state`` for the job (``begin``, a task id for ``/internal/progress``) and watches the Interrupt flag;
leaving it checks the host model is left as found, ends the state and releases the lock. ``mirror`` is the
runner listener that copies each job's progress into ``shared.state``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from .env import loaded_model, m

log = logging.getLogger("lora_trainer")

STATE_FIELDS = ("job", "job_no", "job_count", "sampling_step", "sampling_steps", "textinfo")


def task_id(job_id: str) -> str:
    """The WebUI task id of a job (what ``requestProgress``/``/internal/progress`` take)."""
    return f"task(lora_trainer-{job_id})"


class _ModelGuard:
    """Cheap identity record of the host model taken as a job starts, checked and repaired as it ends.

    The training core already restores everything in ``finally``; this is the last line: stray adapter
    forwards are detached, ``requires_grad`` and train/eval flags are put back, and a parameter that is no
    longer the same tensor is reported (it cannot be repaired).
    """

    def __init__(self, model: Any):
        self.model = model
        self.params = [(n, p, p.device, p.data_ptr(), p.requires_grad) for n, p in model.named_parameters()]
        self.modes = [(mod, mod.training) for mod in model.modules()]

    def restore(self) -> list[str]:
        from ..training.network import LoRAModule

        problems = []
        for mod, training in self.modes:
            owner = getattr(mod.__dict__.get("forward"), "__self__", None)
            if isinstance(owner, LoRAModule):
                owner.detach()
                problems.append("a LoRA adapter was still attached")
            if mod.training != training:
                mod.train(training)
        now = dict(self.model.named_parameters())
        for name, p, device, ptr, requires_grad in self.params:
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
            # (--medvram moves whole sub-models between devices: a pointer only means something on one device)
            if now.get(name) is not p or (p.device == device and p.data_ptr() != ptr):
                problems.append(f"parameter {name} is not the same tensor as before the job")
        return problems


class HostJobLock:
    """Context manager the runner holds around each job (pass it as ``JobRunner(lock=...)``)."""

    def __init__(self, poll_seconds: float = 0.2):
        self.runner = None  # set once the Service (and its runner) exists
        self.poll_seconds = poll_seconds
        self.job_id: Optional[str] = None
        self.kind = ""
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._guard: Optional[_ModelGuard] = None

    def __enter__(self) -> "HostJobLock":
        queue_lock = m("call_queue").queue_lock
        queue_lock.acquire()
        try:
            self.job_id = self.runner.running() if self.runner is not None else None
            st = self.runner.get(self.job_id) if self.job_id else None
            self.kind = (st or {}).get("kind", "job")
            state = m("shared").state
            state.begin(job=f"lora_trainer:{self.kind}")  # also clears an Interrupt meant for someone else
            state.job_count, state.job_no = 1, 0
            state.sampling_step, state.sampling_steps = 0, 0
            state.textinfo = f"LoRA Trainer: {self.kind} starting"
            self._progress("start_task")
            model = loaded_model()
            self._guard = _ModelGuard(model) if model is not None else None
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="lora-trainer-interrupt", daemon=True)
            self._watcher.start()
        except BaseException:
            queue_lock.release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._stop.set()
            if self._watcher is not None:
                self._watcher.join(5)
            if self._guard is not None:
                for problem in dict.fromkeys(self._guard.restore()):
                    log.error("host model after job %s: %s", self.job_id, problem)
            self._guard = None
            self._progress("finish_task")
            m("shared").state.end()
        finally:
            self.job_id = None
            m("call_queue").queue_lock.release()

    def _progress(self, fn: str) -> None:
        if not self.job_id:
            return
        try:
            getattr(m("progress"), fn)(task_id(self.job_id))
        except Exception:  # noqa: BLE001 - the progress API is a nicety
            log.debug("progress.%s failed", fn, exc_info=True)

    def _watch(self) -> None:
        """The Interrupt button sets ``shared.state.interrupted``: cancel our job (it stops within a step)."""
        job = self.job_id
        while not self._stop.wait(self.poll_seconds):
            state = m("shared").state
            if job and (state.interrupted or getattr(state, "stopping_generation", False)):
                log.info("Interrupt pressed: cancelling job %s", job)
                self.runner.cancel(job)
                return

    # ---- the runner listener ------------------------------------------------------------------------
    def mirror(self, job_id: str, event: str, data: dict) -> None:
        """Copy the running job's progress into ``shared.state`` (the WebUI's progress bar and API read it)."""
        if event != "progress" or job_id != self.job_id:
            return
        state = m("shared").state
        step, total = data.get("step"), data.get("total")
        if isinstance(step, int) and isinstance(total, int) and total > 0:
            state.sampling_step, state.sampling_steps = step, total
        phase = data.get("phase") or self.kind
        text = f"LoRA Trainer {self.kind}: {phase} {step}/{total}"
        loss = data.get("loss")
        if isinstance(loss, float) and loss == loss:
            text += f", loss {loss:.4f}"
        state.textinfo = text


def protected_state():
    """Save ``shared.state``'s progress fields and Interrupt flag around host calls that reset them
    (``process_images``, ``interrogate``); the flag is never lost, only added to."""
    return _StateKeeper()


class _StateKeeper:
    def __enter__(self):
        state = m("shared").state
        self.saved = {f: getattr(state, f, None) for f in STATE_FIELDS}
        self.interrupted = state.interrupted
        return self

    def __exit__(self, *exc: Any) -> None:
        state = m("shared").state
        for f, v in self.saved.items():
            setattr(state, f, v)
        state.interrupted = state.interrupted or self.interrupted
