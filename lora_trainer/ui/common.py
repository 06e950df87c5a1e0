"""What every step shares: the build context, error messages, the progress bar, and watching a job.

Progress without timers: a step's Run button is a generator callback that submits the job through
``Service`` and then yields the job's state from ``service.runner.get`` every half second until it is done.
Generators stream over gradio's queue in 3.41 and 4.x alike (the WebUI's queue is on; the standalone ``ui``
turns it on), so no ``every=`` polling runs while nothing is happening. Cancel buttons run outside the queue
(``queue=False``) so they answer while a generator holds a worker.

Errors: a ``UserError`` becomes "⚠ message — hint" in the step's message box; anything else is logged with
its traceback and shown as one line naming the log — never a traceback in the page.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from ..errors import UserError
from ..jobs import DONE, FAILED, FINISHED, QUEUED, RUNNING
from .i18n import Translator

log = logging.getLogger("lora_trainer.ui")
POLL_SECONDS = 0.5
EN = Translator("en")   # the default translator: English, with the same {field} formatting


@dataclass
class Ctx:
    """Handed to every step's ``build``: the service, the host's facts, the translator, the tooltips."""

    service: Any
    host: dict
    t: Callable[..., str]
    tips: dict = field(default_factory=dict)
    project: Any = None            # the project dropdown (an input of nearly every callback)
    summary: Any = None            # the project header (its counts); an output of the steps that change them
    initial_project: Optional[str] = None
    last_project: Optional[str] = None     # the project this tab opened last: a reloaded page opens it again
    poll: float = POLL_SECONDS
    stops: set = field(default_factory=set)   # (project, sequence) pairs whose multi-job loop should stop

    def tip(self, elem_id: str, text: str) -> str:
        self.tips[elem_id] = self.t(text)
        return elem_id

    @property
    def can_train(self) -> bool:
        return self.host.get("can_train", True) is not False


# --------------------------------------------------------------------------------------------- errors

def error_text(exc: BaseException, t: Callable[..., str] = EN) -> str:
    """One line for the page: the UserError's message and hint, or the failure's type and where the log is."""
    if isinstance(exc, UserError):
        return f"⚠ **{_md(exc.message)}**" + (f" — {_md(exc.hint)}" if exc.hint else "")
    log.error("tab callback failed", exc_info=exc)
    return "⚠ " + t("Unexpected error: {what}. The details are in the log.",
                    what=_md(f"{type(exc).__name__}: {exc}"))


def job_error_text(st: dict) -> str:
    err = st.get("error") or {}
    msg = err.get("message") or "failed"
    hint = err.get("hint") or ""
    return f"⚠ **{_md(msg)}**" + (f" — {_md(hint)}" if hint else "")


def _md(text: str) -> str:
    """Plain text inside Markdown: no accidental emphasis, links or HTML."""
    return html.escape(str(text)).replace("*", "\\*").replace("_", "\\_").replace("[", "\\[")


def need_project(name: Optional[str]) -> str:
    if not name:
        raise UserError("no project is open", "create a project or pick one at the top of the tab")
    return name


def guard(n_outputs: int, t: Callable[..., str] = EN) -> Callable:
    """Wrap a plain callback whose LAST output is the step's message box: an exception leaves the other
    outputs as they are and puts the message there. With one output, ``fn`` returns the bare value."""
    def deco(fn: Callable) -> Callable:
        def run(*args):
            try:
                return fn(*args)
            except Exception as exc:  # noqa: BLE001 - the page shows a message, the log the traceback
                import gradio as gr

                if n_outputs == 1:  # gradio takes a lone output's value as it is, not in a list
                    return error_text(exc, t)
                return [gr.update() for _ in range(n_outputs - 1)] + [error_text(exc, t)]
        run.__name__ = getattr(fn, "__name__", "callback")
        run.__doc__ = fn.__doc__
        return run
    return deco


def guard_gen(n_outputs: int, t: Callable[..., str] = EN) -> Callable:
    """The same for generator callbacks (the wrapper stays a generator function, as gradio requires)."""
    def deco(fn: Callable) -> Callable:
        def run(*args):
            try:
                yield from fn(*args)
            except Exception as exc:  # noqa: BLE001
                import gradio as gr

                yield [gr.update() for _ in range(n_outputs - 1)] + [error_text(exc, t)]
        run.__name__ = getattr(fn, "__name__", "callback")
        run.__doc__ = fn.__doc__
        return run
    return deco


# --------------------------------------------------------------------------------------------- progress

def progress_html(st: Optional[dict], t: Callable[..., str] = EN) -> str:
    """The step's progress bar: fraction done, the phase, step/total, loss, speed and time left."""
    if not st:
        return '<div class="lt-progress lt-idle"><span class="lt-progress-text"></span></div>'
    status = st.get("status", "")
    p = st.get("progress") or {}
    step, total = p.get("step"), p.get("total")
    frac = (step / total) if isinstance(step, (int, float)) and total else 0.0
    if status == FINISHED:
        frac = 1.0
    bits = [t(status_word(status))]
    if p.get("phase"):
        bits.append(str(p["phase"]))
    if total:
        bits.append(f"{step}/{total}")
    if p.get("file"):
        bits.append(str(p["file"]))
    if isinstance(p.get("loss"), (int, float)):
        bits.append(f"loss {p['loss']:.4f}")
    if isinstance(p.get("d_lr"), (int, float)):
        bits.append(f"d·lr {p['d_lr']:.3g}")
    if isinstance(p.get("it_s"), (int, float)) and p["it_s"] > 0:
        bits.append(f"{p['it_s']:.2f} it/s")
    if status == RUNNING and isinstance(p.get("eta"), (int, float)) and p["eta"] > 0:
        bits.append(t("{s} left", s=fmt_seconds(p["eta"])))
    pct = max(0.0, min(100.0, 100.0 * frac))
    text = html.escape(" · ".join(bits))
    return (f'<div class="lt-progress lt-{html.escape(status)}" data-status="{html.escape(status)}">'
            f'<div class="lt-progress-fill" style="width:{pct:.1f}%"></div>'
            f'<span class="lt-progress-text">{text}</span></div>')


def status_word(status: str) -> str:
    return {QUEUED: "Queued (another job is running)", RUNNING: "Running", FINISHED: "Finished",
            FAILED: "Failed", "cancelled": "Cancelled", "interrupted": "Interrupted"}.get(status, status)


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def done_text(st: dict, t: Callable[..., str]) -> str:
    """The message box once a job is over."""
    status = st.get("status")
    if status == FAILED:
        return job_error_text(st)
    took = ""
    if st.get("started") and st.get("finished"):
        took = " " + t("in {s}", s=fmt_seconds(st["finished"] - st["started"]))
    return f"{t(status_word(status))}{took}."


def watch(service, job_id: str, poll: float = POLL_SECONDS) -> Iterator[dict]:
    """Yield the job's state until it is done (the last state yielded is the final one)."""
    while True:
        st = service.runner.get(job_id)
        if st is None:
            raise UserError(f"job {job_id} vanished", "refresh the page")
        yield st
        if st["status"] in DONE:
            return
        time.sleep(poll)


def project_jobs(service, project: str, kinds=None, active: bool = False) -> list[dict]:
    """This project's jobs (newest last), of ``kinds``; only queued/running ones with ``active``."""
    out = []
    for st in service.runner.list():
        if (st.get("config") or {}).get("project") != project:
            continue
        if kinds and st.get("kind") not in kinds:
            continue
        if active and st.get("status") not in (QUEUED, RUNNING):
            continue
        out.append(st)
    return out


def stop_sequence(ctx: "Ctx", project: Optional[str], sequence: str, kinds) -> str:
    """Cancel button of a step that runs several jobs in a row: cancel the job now, skip the rest."""
    if not project:
        return ctx.t("Nothing to cancel.")
    ctx.stops.add((project, sequence))
    n = cancel_jobs(ctx.service, project, kinds)
    return ctx.t("Cancelling…") if n else ctx.t("Stopping after the current job…")


def wire_cancel(ctx: "Ctx", button, msg, kinds) -> None:
    """A step's Cancel button: cancel the open project's queued or running jobs of ``kinds``."""
    t = ctx.t
    button.click(guard(1, t)(lambda p: t("Cancelling…") if cancel_jobs(ctx.service, p, kinds)
                             else t("Nothing to cancel.")), [ctx.project], [msg], queue=False)


def cancel_jobs(service, project: Optional[str], kinds) -> int:
    """Cancel this project's queued or running jobs of ``kinds``; how many were told."""
    if not project:
        return 0
    return sum(bool(service.runner.cancel(st["id"])) for st in project_jobs(service, project, kinds, active=True))


# --------------------------------------------------------------------------------------------- gradio 3/4

def plain_choices(pairs) -> tuple[list[str], dict[str, Any]]:
    """(labels, label → value) for a Dropdown. gradio 3.41's Dropdown takes strings only: a (label, value)
    pair becomes its repr on the page and comes back as that string (pairs came in 4.0; Radio and
    CheckboxGroup take them in 3.41 too). So the label is the choice and the handler maps it back."""
    labels, values = [], {}
    for pair in pairs:
        label, value = (pair if isinstance(pair, (tuple, list)) else (pair, pair))
        labels.append(str(label))
        values[str(label)] = value
    return labels, values


def file_paths(files: Any) -> list[str]:
    """Uploaded files as paths: tempfile wrappers (``.name``) in gradio 3, strings in 4."""
    if not files:
        return []
    if not isinstance(files, (list, tuple)):
        files = [files]
    return [str(getattr(f, "name", f)) for f in files if f]
