"""A "Download" button with a progress bar beside a model choice (the tagger, the background model), shown
only while the chosen model is one of the store's and its files are missing, instead of a dead end.

Clicking it runs ``Service.download_model`` as a job and shows it with the tab's job watching (``watch``,
``progress_html``); when the job ends the button hides (or stays, with the error, if the files are still
missing) and the step refreshes its choice. The user's click is the say-so: nothing downloads otherwise.
"""

from __future__ import annotations

from typing import Callable, Optional

from .common import Ctx, done_text, guard, guard_gen, progress_html, watch


def missing(name: Optional[str]) -> bool:
    """Whether ``name`` is a store model whose files are not on disk (never touches the network)."""
    from .. import model_store

    return bool(name) and name in model_store.CATALOGUE and model_store.find(name) is None


def button_update(ctx: Ctx, name: Optional[str]):
    import gradio as gr

    return gr.update(visible=missing(name), value=ctx.t("Download {name}", name=name or ""))


def download(ctx: Ctx, name: str):
    """Generator: [progress, button, message] while the download job runs."""
    import gradio as gr

    if not missing(name):
        yield [gr.update(), button_update(ctx, name), ""]
        return
    job = ctx.service.download_model(name)
    for st in watch(ctx.service, job, ctx.poll):
        if st["status"] in ("finished", "cancelled", "failed"):
            msg = done_text(st, ctx.t)
            if st["status"] == "finished":
                msg = ctx.t("Downloaded {name} to {folder}.", name=name, folder=(st.get("result") or {}).get(
                    "folder", ""))
            yield [progress_html(st, ctx.t), button_update(ctx, name), msg]
        else:
            yield [progress_html(st, ctx.t), gr.update(), ""]


def build(ctx: Ctx, prefix: str, name: Optional[str]) -> dict:
    """The button and its progress bar (call inside the step's layout, beside the choice)."""
    import gradio as gr

    btn = gr.Button(ctx.t("Download {name}", name=name or ""), visible=missing(name), size="sm",
                    elem_id=ctx.tip(f"{prefix}-download", "Download the chosen model's files (once)"))
    progress = gr.HTML(progress_html(None), elem_id=f"{prefix}-download-progress")
    return {"download": btn, "download_progress": progress}


def wire(ctx: Ctx, parts: dict, choice, msg, refresh: Callable, to_name: Callable = lambda v: v) -> None:
    """``choice`` changing shows or hides the button; the button downloads, then ``refresh(value)`` gives
    the choice's new state (its labels: the model is now available). ``to_name``: the choice's value (a
    dropdown label, ``common.plain_choices``) → the model's name."""
    choice.change(guard(1, ctx.t)(lambda v: button_update(ctx, to_name(v))), [choice], [parts["download"]])
    parts["download_event"] = parts["download"].click(
        guard_gen(3, ctx.t)(lambda v: download(ctx, to_name(v))), [choice],
        [parts["download_progress"], parts["download"], msg]
    ).then(guard(1, ctx.t)(refresh), [choice], [choice])
