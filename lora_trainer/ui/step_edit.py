"""Step 4 · Edit tags: the tag editor fragment (``ui/edit_tags.py``) pointed at the open project's dataset.

The editor itself is owned by the tag-editor work; this step only gives it the folder: the project's
dataset folder when a project is opened, and a reload after auto-tagging finishes, so the captions the
tagger just wrote are what the editor shows.
"""

from __future__ import annotations

from .common import Ctx


def build(ctx: Ctx) -> dict:
    import gradio as gr

    from .edit_tags import build_tag_editor

    def get_folder():
        name = ctx.initial_project
        return str(ctx.service.dataset_dir(name)) if name else ""

    with gr.Column(elem_id="lt-edit"):
        gr.Markdown(ctx.t("Review the captions: delete tags that describe the subject itself (they should bind "
                          "to the trigger word), keep what you want to change in prompts, then Save."),
                    elem_classes=["lt-help"])
        parts = build_tag_editor(get_folder)
    return parts


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    """Reload the editor after the auto-tag step's run (its folder box keeps what the user typed)."""
    tag = steps.get("tag") or {}
    if "run_event" in tag:
        tag["run_event"].then(parts["load_fn"], parts["load_inputs"], parts["view"])


def on_project(ctx: Ctx, parts: dict):
    """Put the project's dataset folder in the editor's box; the tab chains the editor's load after it."""
    def load(p):
        try:
            return str(ctx.service.dataset_dir(p)) if p else ""
        except Exception:  # noqa: BLE001 - a project that vanished: leave the box empty
            return ""
    return [parts["folder"]], load
