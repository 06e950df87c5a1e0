"""Step 1 · Images: upload photos or a zip into the open project's ``source/``, see them, remove strays.

Uploads go through ``Service.add_images``: every image is decoded on arrival (the import step's checks), the
good ones are copied, each refused file is named with its reason (an empty one too: it never blocks the
batch), exact duplicates of the project's images are skipped and named, and the project header's counts
are refreshed by the same event. Zips are extracted with the importer's bomb and path checks; the
uploaded temporary files are only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .common import Ctx, _md, file_paths, guard, need_project


def gallery(service, project: Optional[str], where: str = "source") -> list:
    """``(path, name)`` for each image of the project's ``source/`` (or dataset). A HEIC or TIFF photo, which
    browsers do not show, is shown by a JPEG thumbnail kept in ``<project>/cache/thumbs/``; the first showing
    makes them on every core (about 0.5 s of decoding per 12 MP HEIC)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from ..prepare.importer import browser_view

    if not project:
        return []
    folder, thumbs = service.image_folder(project, where), service.thumbs_dir(project)
    names = service.images(project, where)
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as pool:
        views = list(pool.map(lambda n: browser_view(folder / n, thumbs), names))
    return [(str(v), n) for v, n in zip(views, names)]


def add_images(service, t, project: Optional[str], files) -> list:
    """[gallery, selected, project summary, message]: the good files added, each refused one named with its
    reason, exact duplicates named as skipped, and the header's counts refreshed in the same event."""
    from .tab import project_summary

    name = need_project(project)
    paths = file_paths(files)
    if not paths:
        return [gallery(service, name), "", _unchanged(), "⚠ " + t("Choose images or a zip to upload first.")]
    rep = service.add_images(name, paths)
    lines = [t("{n} image(s) added.", n=sum(1 for c in rep["copied"] if _is_image(c)))]
    if rep["rejected"]:
        lines.append("⚠ " + t("Not added:") + " " + _listing(t, rep["rejected"]))
    if rep.get("duplicates"):
        lines.append(t("Exact duplicates, skipped:") + " " + _listing(t, rep["duplicates"]))  # of the project
        # or of another file of this upload: each reason says which
    return [gallery(service, name), "", project_summary(service, t, name), "\n\n".join(lines)]


def _is_image(name: str) -> bool:
    from ..prepare.importer import SOURCE_IMAGE_EXTS

    return Path(name).suffix.lower() in SOURCE_IMAGE_EXTS


def _listing(t, lines: list, most: int = 20) -> str:
    """``name (reason); …`` for the message box; an empty file also gets what to do about it."""
    def one(r: dict) -> str:
        reason = r.get("reason", r.get("status", ""))
        if reason.startswith("empty file"):
            reason += " — " + t("if the browser was still sending it, add it again when the upload has finished")
        return f"{_md(r['file'])} ({_md(reason)})"
    more = len(lines) - most
    return "; ".join(one(r) for r in lines[:most]) + (" " + t("and {n} more", n=more) if more > 0 else "")


def _unchanged():
    import gradio as gr

    return gr.update()


def remove_image(service, t, project: Optional[str], image: str) -> list:
    """[gallery, selected, project summary, message]."""
    from .tab import project_summary

    name = need_project(project)
    if not image:
        return [gallery(service, name), "", _unchanged(), "⚠ " + t("Click an image in the gallery first.")]
    service.delete_image(name, image, "source")
    return [gallery(service, name), "", project_summary(service, t, name), t("Removed {name}.", name=image)]


def build(ctx: Ctx) -> dict:
    import gradio as gr

    t = ctx.t
    with gr.Column(elem_id="lt-images"):
        gr.Markdown(t("Add the photos of your subject (15–50 is typical). Originals are copied into the "
                      "project, never changed."), elem_classes=["lt-help"])
        with gr.Row():
            upload = gr.File(label=t("Images or a .zip"), file_count="multiple",
                             file_types=["image", ".heic", ".heif", ".zip"],
                             elem_id=ctx.tip("lt-images-upload", "Pick image files or one zip of them"), scale=3)
            with gr.Column(scale=1):
                add_btn = gr.Button(t("Add to project"), variant="primary",
                                    elem_id=ctx.tip("lt-images-add", "Copy the chosen files into the project"))
                selected = gr.Textbox(label=t("Selected image"), interactive=False, elem_id="lt-images-selected")
                remove_btn = gr.Button(t("Remove selected"),
                                       elem_id=ctx.tip("lt-images-remove", "Delete the selected image from the project"))
        msg = gr.Markdown("", elem_id="lt-images-msg", elem_classes=["lt-msg"])
        pics = gr.Gallery(label=t("Project images"), columns=8, height="auto", elem_id="lt-images-gallery")
    return {"upload": upload, "add": add_btn, "selected": selected, "remove": remove_btn, "msg": msg,
            "gallery": pics}


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    import gradio as gr

    svc, t = ctx.service, ctx.t
    # The project header (ctx.summary) is an output of the same event, so its counts are never a step behind.
    outs = [parts["gallery"], parts["selected"], ctx.summary, parts["msg"]]
    parts["add"].click(guard(4, t)(lambda p, f: add_images(svc, t, p, f)), [ctx.project, parts["upload"]], outs)
    parts["remove"].click(guard(4, t)(lambda p, s: remove_image(svc, t, p, s)), [ctx.project, parts["selected"]],
                          outs)

    def on_select(evt, project):
        items = gallery(svc, project)
        i = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        return items[i][1] if 0 <= i < len(items) else ""

    on_select.__annotations__ = {"evt": gr.SelectData}  # real class, not a string: gradio reads the hint

    parts["gallery"].select(on_select, [ctx.project], [parts["selected"]])


def on_project(ctx: Ctx, parts: dict):
    """(outputs, fn) refreshing this step when another project is opened."""
    return [parts["gallery"], parts["selected"], parts["msg"]], \
        lambda p: [gallery(ctx.service, p), "", ""]
