"""Step 1 · Images: upload photos or a zip into the open project's ``source/``, see them, remove strays.

Uploads are copied by ``Service.add_images`` (zips are extracted with its bomb and path checks); the
uploaded temporary files are only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .common import Ctx, file_paths, guard, need_project


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
    """[gallery, selected, message]."""
    name = need_project(project)
    paths = file_paths(files)
    if not paths:
        return [gallery(service, name), "", "⚠ " + t("Choose images or a zip to upload first.")]
    empty = [Path(p).name for p in paths if not Path(p).is_file() or Path(p).stat().st_size == 0]
    if empty:  # gradio hands over a placeholder while the browser is still sending the file
        return [gallery(service, name), "", "⚠ " + t("Some files are empty or still uploading ({files}): wait until "
                                                     "the upload has finished, then add again.",
                                                     files=", ".join(empty[:5]))]
    rep = service.add_images(name, paths)
    msg = t("{n} image(s) added.", n=len(rep["copied"]))
    if rep["rejected"]:
        msg += " " + t("Not added:") + " " + "; ".join(f"{r['file']} ({r.get('reason', r['status'])})"
                                                    for r in rep["rejected"][:10])
    return [gallery(service, name), "", msg]


def remove_image(service, t, project: Optional[str], image: str) -> list:
    name = need_project(project)
    if not image:
        return [gallery(service, name), "", "⚠ " + t("Click an image in the gallery first.")]
    service.delete_image(name, image, "source")
    return [gallery(service, name), "", t("Removed {name}.", name=image)]


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
    outs = [parts["gallery"], parts["selected"], parts["msg"]]
    parts["add"].click(guard(3, t)(lambda p, f: add_images(svc, t, p, f)), [ctx.project, parts["upload"]], outs)
    parts["remove"].click(guard(3, t)(lambda p, s: remove_image(svc, t, p, s)), [ctx.project, parts["selected"]],
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
