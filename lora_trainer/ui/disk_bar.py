"""The project bar's "Disk" line: what the open project holds on disk (``Service.disk_usage``) and a cleanup
of what can go (``Service.cleanup``). The tab offers only the categories that never hold the user's work
(resume state, caches, test copies, intermediate saves); final files, the dataset and the photos go with the
project (or by the API's cleanup, when named)."""

from __future__ import annotations

from typing import Callable, Optional

from ..disk import DEFAULT_CLEANUP, human
from .common import Ctx, guard

TAB_CLEANABLE = ("state", "caches", "host_copies", "intermediate")
LABELS = {"source": "source photos", "dataset": "dataset", "outputs": "LoRA files", "intermediate":
          "intermediate saves", "state": "resume state", "caches": "caches", "jobs": "job logs and images",
          "host_copies": "test copies in the Lora folder"}


def disk_line(service, t: Callable[..., str], project: Optional[str]) -> str:
    """``Disk: 1.6 GB · resume state 865 MB · LoRA files 147 MB · …`` (the largest first, none of 0 bytes)."""
    if not project:
        return ""
    use = service.disk_usage(project)
    parts = sorted(((n, c) for c, n in use["bytes"].items() if n), reverse=True)
    return " · ".join([t("Disk: {size}", size=human(use["total"]))] +
                      [f"{t(LABELS.get(c, c))} {human(n)}" for n, c in parts])


def cleanup(service, t: Callable[..., str], project: Optional[str], what) -> list:
    """[disk line, message]."""
    from .common import need_project

    name = need_project(project)
    res = service.cleanup(name, list(what or []))
    freed = sum(res["freed"].values())
    return [disk_line(service, t, name), t("Freed {size}.", size=human(freed))]


def build(ctx: Ctx) -> dict:
    import gradio as gr

    t = ctx.t
    with gr.Row(elem_id="lt-project-disk"):
        line = gr.Markdown(disk_line(ctx.service, t, ctx.initial_project), elem_id="lt-disk-line")
        what = gr.CheckboxGroup(choices=[(t(LABELS[c]), c) for c in TAB_CLEANABLE], value=list(DEFAULT_CLEANUP),
                                label=t("Clean up"), scale=2,
                                elem_id=ctx.tip("lt-disk-what", "What to delete: resume state (only needed to "
                                                "resume a stopped run), caches, test copies in the WebUI's Lora "
                                                "folder, intermediate saves (the Test grid's rows)"))
        btn = gr.Button(t("Clean up"), scale=0, elem_id=ctx.tip(
            "lt-disk-clean", "Delete what is ticked; final LoRA files and your photos are never touched"))
    return {"line": line, "what": what, "clean": btn}


def wire(ctx: Ctx, parts: dict, msg) -> None:
    t = ctx.t
    parts["clean"].click(guard(2, t)(lambda p, w: cleanup(ctx.service, t, p, w)), [ctx.project, parts["what"]],
                         [parts["line"], msg])


def refresh(ctx: Ctx, parts: dict):
    """(outputs, fn) to refresh the line when the project changes or a step has written files."""
    return [parts["line"]], lambda p: disk_line(ctx.service, ctx.t, p)
