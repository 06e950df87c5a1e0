"""Step 4 in the tab: the tag editor as a gradio fragment, ``build_tag_editor(get_folder)``.

Widgets only: every action is an ``EditorSession`` method (``lora_trainer/tags/session.py``), so the logic is
tested without gradio. Written against the gradio 3.41 API that also exists in 4.x (``gr.update``, tuple
choices, no ``.style``). Element ids start with ``lt-tags-``; ``javascript/lora_trainer_tags.js`` clicks the
delete/next/previous/undo/redo buttons from the keyboard.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

from ..errors import UserError

log = logging.getLogger("lora_trainer.ui")
BACKGROUNDS = ["none", "white", "transparent", "grey", "black", "light blue", "pink"]
FREQ_HEADERS = ["tag", "中文", "images", "share"]


def _safe(fn: Callable) -> Callable:
    """Run an action; a UserError becomes the status line instead of a gradio error popup."""
    def run(sess, *args):
        if sess is None:
            return None, "load a folder first"
        try:
            return sess, fn(sess, *args)
        except UserError as exc:
            return sess, f"⚠ {exc}"
    return run


def build_tag_editor(get_folder: Callable[[], Optional[str]]):
    """Build the editor inside the current ``gr.Blocks`` context; returns a dict of its main components.

    ``get_folder()`` gives the dataset folder the previous step produced (the folder box's default; the
    user may type another).
    """
    import gradio as gr

    from ..tags.session import EditorSession

    def default_folder() -> str:
        try:
            return str(get_folder() or "")
        except Exception:  # noqa: BLE001 - a broken default must not break the tab
            log.exception("get_folder failed")
            return ""

    with gr.Column(elem_id="lt-tags-editor"):
        state = gr.State(None)
        with gr.Row():
            folder = gr.Textbox(label="Dataset folder", value=default_folder, elem_id="lt-tags-folder", scale=4)
            load_btn = gr.Button("Load", elem_id="lt-tags-load", scale=1)
            undo_btn = gr.Button("↶ Undo", elem_id="lt-tags-undo", scale=1)
            redo_btn = gr.Button("↷ Redo", elem_id="lt-tags-redo", scale=1)
            save_btn = gr.Button("Save", variant="primary", elem_id="lt-tags-save", scale=1)
        status = gr.Markdown("Load a folder of images with captions.", elem_id="lt-tags-status")
        with gr.Row():
            with gr.Column(scale=2):
                search = gr.Textbox(label="Find images by tag (English or 中文)", elem_id="lt-tags-search")
                image_dd = gr.Dropdown(label="Image", choices=[], elem_id="lt-tags-image", interactive=True)
                with gr.Row():
                    prev_btn = gr.Button("◀ Previous", elem_id="lt-tags-prev")
                    next_btn = gr.Button("Next ▶", elem_id="lt-tags-next")
                preview = gr.Image(label="Preview", type="filepath", interactive=False, elem_id="lt-tags-preview")
            with gr.Column(scale=3):
                tag_list = gr.CheckboxGroup(label="Tags · 中文 (tick, then Delete)", choices=[], elem_id="lt-tags-list")
                with gr.Row():
                    delete_btn = gr.Button("Delete ticked", elem_id="lt-tags-delete")
                    front_btn = gr.Button("Move ticked to front", elem_id="lt-tags-front")
                with gr.Row():
                    new_tag = gr.Textbox(label="Add tags (English or 中文, comma-separated)", elem_id="lt-tags-new", scale=3)
                    add_pos = gr.Radio(["back", "front"], value="back", label="Where", elem_id="lt-tags-add-pos", scale=1)
                add_btn = gr.Button("Add to this image", elem_id="lt-tags-add")
                caption = gr.Textbox(label="Caption (edit and apply)", lines=3, elem_id="lt-tags-caption")
                caption_btn = gr.Button("Apply caption", elem_id="lt-tags-caption-apply")
        with gr.Row():
            trigger = gr.Textbox(label="Trigger word (kept first)", elem_id="lt-tags-trigger", scale=2)
            keep_tokens = gr.Number(label="keep_tokens", value=1, precision=0, elem_id="lt-tags-keep", scale=1)
        with gr.Tabs():
            with gr.Tab("Cleanup suggestions"):
                with gr.Row():
                    background = gr.Dropdown(BACKGROUNDS, value="none", label="Background after preparation",
                                             allow_custom_value=True, elem_id="lt-tags-background")
                    find_btn = gr.Button("Find suggestions", elem_id="lt-tags-suggest")
                sugg = gr.CheckboxGroup(label="Suggestions (tick to approve)", choices=[], elem_id="lt-tags-suggestions")
                with gr.Row():
                    approve_btn = gr.Button("Apply ticked", elem_id="lt-tags-approve")
                    approve_all_btn = gr.Button("Apply all", elem_id="lt-tags-approve-all")
            with gr.Tab("Bulk edit"):
                flt = gr.Textbox(label="Only images matching (e.g. 1girl AND (smile OR grin) AND NOT hat)",
                                 elem_id="lt-tags-filter")
                with gr.Row():
                    bulk_tags = gr.Textbox(label="Tags", elem_id="lt-tags-bulk-tags", scale=3)
                    bulk_to = gr.Textbox(label="Replace with", elem_id="lt-tags-bulk-to", scale=2)
                    bulk_pos = gr.Radio(["back", "front"], value="back", label="Add where", scale=1,
                                        elem_id="lt-tags-bulk-pos")
                with gr.Row():
                    bulk_btns = {a: gr.Button(label, elem_id=f"lt-tags-bulk-{a}") for a, label in [
                        ("add", "Add"), ("remove", "Remove"), ("replace", "Replace"), ("dedupe", "Remove duplicates"),
                        ("trigger", "Trigger word first"), ("sort", "Sort by frequency")]}
            with gr.Tab("Frequency"):
                freq_query = gr.Textbox(label="Search tags (English or 中文)", elem_id="lt-tags-freq-search")
                freq = gr.Dataframe(headers=FREQ_HEADERS, datatype=["str", "str", "number", "str"],
                                    interactive=False, elem_id="lt-tags-freq")

    view = [state, status, image_dd, preview, tag_list, caption, freq, sugg]

    def render(sess, msg, query="", fquery=""):
        if sess is None:
            return [None, msg or "Load a folder first.", gr.update(choices=[], value=None), None,
                    gr.update(choices=[], value=[]), "", [], gr.update(choices=[], value=[])]
        keys = sess.image_keys(query) or sess.store.keys()
        line = sess.status() + (f" — {msg}" if msg else "")
        return [sess, line, gr.update(choices=keys, value=sess.current), sess.image_path(),
                gr.update(choices=sess.tag_choices(), value=[]), sess.caption(),
                sess.freq_rows(fquery) or [["", "", 0, ""]],
                gr.update(choices=sess.suggestion_choices(), value=[])]

    def wire(btn_event, fn, inputs):
        """``fn(sess, *values) -> message``; every action re-renders the same outputs."""
        safe = _safe(fn)

        def handler(sess, query, fquery, *values):
            sess, msg = safe(sess, *values)
            return render(sess, msg, query, fquery)
        btn_event(handler, inputs=[state, search, freq_query, *inputs], outputs=view)

    def load(folder_text, query, fquery):
        try:
            sess = EditorSession.open(folder_text or default_folder())
            return render(sess, "; ".join(sess.store.warnings), query, fquery)
        except UserError as exc:
            return render(None, f"⚠ {exc}")

    load_btn.click(load, inputs=[folder, search, freq_query], outputs=view)
    wire(image_dd.input if hasattr(image_dd, "input") else image_dd.change, lambda s, k: s.select(k) or "", [image_dd])
    wire(prev_btn.click, lambda s, q: s.step(-1, q) or "", [search])
    wire(next_btn.click, lambda s, q: s.step(1, q) or "", [search])
    wire(search.submit, lambda s, q: s.step(0, q) or "", [search])
    wire(freq_query.submit, lambda s: "", [])
    wire(delete_btn.click, lambda s, ticked: s.delete(ticked or []), [tag_list])
    wire(front_btn.click, lambda s, ticked, k: s.move_front(ticked or [], int(k or 0)), [tag_list, keep_tokens])
    wire(add_btn.click, lambda s, text, pos, k: s.add(text, pos, int(k or 0)), [new_tag, add_pos, keep_tokens])
    wire(new_tag.submit, lambda s, text, pos, k: s.add(text, pos, int(k or 0)), [new_tag, add_pos, keep_tokens])
    wire(caption_btn.click, lambda s, text: s.set_caption(text), [caption])
    for action, btn in bulk_btns.items():
        wire(btn.click, lambda s, tags, f, pos, to, trig, k, a=action: s.bulk(a, tags, f, pos, to, trig, int(k or 0)),
             [bulk_tags, flt, bulk_pos, bulk_to, trigger, keep_tokens])
    wire(find_btn.click, lambda s, bg, trig: s.find_suggestions(bg, trig), [background, trigger])
    wire(approve_btn.click, lambda s, ticked, k: s.approve(ticked or [], int(k or 0)), [sugg, keep_tokens])
    wire(approve_all_btn.click, lambda s, k: s.approve(None, int(k or 0)), [keep_tokens])
    wire(undo_btn.click, lambda s: s.undo(), [])
    wire(redo_btn.click, lambda s: s.redo(), [])
    wire(save_btn.click, lambda s: s.save(), [])
    # For the host tab: e.g. ``blocks.load(p["load_fn"], p["load_inputs"], p["view"])`` opens the folder at
    # once, and ``p["render"](sess, message)`` re-draws ``p["view"]`` after the tab's own actions.
    return {"state": state, "folder": folder, "load": load_btn, "status": status, "images": image_dd,
            "tags": tag_list, "caption": caption, "frequency": freq, "suggestions": sugg,
            "background": background, "trigger": trigger, "view": view, "render": render, "load_fn": load,
            "load_inputs": [folder, search, freq_query]}
