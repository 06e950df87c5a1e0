"""Step 2 · Crop & background: ``Service.preprocess`` over the project's ``source/`` into its dataset folder,
with before/after previews and the per-file report.

The controls are ``PrepareConfig``'s fields (tagging is step 3). The tab proposes the recipe's choices on
top of the command-line defaults: the model's training resolution as the size, and a background model
when rembg and one of its model files are there — otherwise ``none``, saying what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..prepare.config import PrepareConfig
from . import controls as C
from . import model_download
from .common import Ctx, _md, done_text, guard_gen, need_project, progress_html, watch, wire_cancel

SKIP = ("tagger", "trigger")
PROPOSED_BACKGROUNDS = ("u2net", "isnet-general-use", "u2netp", "u2net_human_seg", "silueta")
KINDS = ("preprocess",)


def names() -> list[str]:
    return [n for names in C.groups(PrepareConfig, SKIP).values() for n in names]


def proposal(service, host: dict) -> tuple[dict, str, dict]:
    """(values to pre-fill, a note about background removal as a template, its fields)."""
    preset = service.models.preset() or {}
    values: dict = {"size": int(preset.get("resolution", 512))}
    disabled = host.get("disabled") or host.get("disabled_features") or {}
    from ..prepare.background import model_file, rembg_available, u2net_home

    ok, why = rembg_available()
    if "rembg" in disabled:
        ok, why = False, str(disabled["rembg"])
    if not ok:
        return values, "Background removal is off: {why}", {"why": why}
    preferred = host.get("rembg_model")  # the WebUI setting "background model", when it names one
    order = ((preferred,) if preferred and preferred != "none" else ()) + PROPOSED_BACKGROUNDS
    for name in order:
        f = model_file(name)
        if f.is_file() and f.stat().st_size > 0:
            values["background"] = name
            return values, "Background removal proposed with {name} ({file}).", {"name": name, "file": str(f)}
    return values, ("No background model found in {folder} (put u2net.onnx or u2netp.onnx there; nothing is "
                    "downloaded): background removal is off."), {"folder": str(u2net_home())}


def results(service, project: str, report_file: Optional[str]) -> tuple[list, str]:
    """(before/after gallery, report lines) from a finished batch's ``report.json``."""
    dest = service.dataset_dir(project)
    path = Path(report_file) if report_file else dest / "report.json"
    if not path.is_file():
        return [], ""
    rep = json.loads(path.read_text(encoding="utf-8"))
    pics = []
    for f in rep.get("files", []):
        for key, label in (("preview_before", "before"), ("preview_after", "after")):
            if f.get(key) and (dest / f[key]).is_file():
                pics.append((str(dest / f[key]), f"{f['file']} · {label}"))
    c = rep.get("counts", {})
    lines = [f"**{c.get('ok', 0)}** ok · {c.get('skipped', 0)} skipped · {c.get('failed', 0)} failed · "
             f"{c.get('warnings', 0)} with warnings"]
    from ..prepare.report import lines as report_lines

    lines += [f"- {ln}" for ln in report_lines(rep)[:30]]
    return pics, "\n".join(lines)


def warning_text(t, report_file: Optional[str]) -> str:
    """The message box's line about the batch's warnings (a face crop that found no face, a small photo…):
    how many, and the first few by name and reason, so they are not only in ``report.json``."""
    if not report_file or not Path(report_file).is_file():
        return ""
    rep = json.loads(Path(report_file).read_text(encoding="utf-8"))
    warned = [(f["file"], w) for f in rep.get("files", []) for w in f.get("warnings", [])]
    if not warned:
        return ""
    n = (rep.get("counts") or {}).get("warnings", len(warned))
    shown = "; ".join(f"{_md(f)}: {_md(w)}" for f, w in warned[:5]) + (" …" if len(warned) > 5 else "")
    return "\n\n⚠ " + t("{n} image(s) with warnings:", n=n) + " " + shown


def run(ctx: Ctx, project: Optional[str], *values):
    """Generator: [progress, gallery, report, message]."""
    import gradio as gr

    name = need_project(project)
    opts = C.collect(PrepareConfig, names(), values)
    job = ctx.service.preprocess(name, opts)
    for st in watch(ctx.service, job, ctx.poll):
        if st["status"] in ("finished", "cancelled"):
            res = st.get("result") or {}
            pics, rep = results(ctx.service, name, res.get("report"))
            yield [progress_html(st, ctx.t), pics, rep, done_text(st, ctx.t) + warning_text(ctx.t, res.get("report"))]
        elif st["status"] == "failed":
            yield [progress_html(st, ctx.t), gr.update(), gr.update(), done_text(st, ctx.t)]
        else:
            yield [progress_html(st, ctx.t), gr.update(), gr.update(), ""]


def build(ctx: Ctx) -> dict:
    import gradio as gr

    t = ctx.t
    values, note, fmt = proposal(ctx.service, ctx.host)
    with gr.Column(elem_id="lt-prepare"):
        gr.Markdown(t("Crop every image to a square of the training size and, optionally, replace the "
                      "background. The originals stay as they are."), elem_classes=["lt-help"])
        gr.Markdown(t(note, **fmt), elem_id="lt-prepare-note", elem_classes=["lt-note"])
        ctrls = C.grouped_controls(PrepareConfig, t, ctx.tips, "lt-prepare", values, open_groups=("crop", "background"),
                                   skip=SKIP)
        dl = model_download.build(ctx, "lt-prepare-background", values.get("background"))  # a missing model
        with gr.Row():
            run_btn = gr.Button(t("Crop and clean"), variant="primary",
                                elem_id=ctx.tip("lt-prepare-run", "Process the project's images into its dataset folder"))
            cancel_btn = gr.Button(t("Cancel"), elem_id=ctx.tip("lt-prepare-cancel", "Stop after the current image"))
        progress = gr.HTML(progress_html(None), elem_id="lt-prepare-progress")
        msg = gr.Markdown("", elem_id="lt-prepare-msg", elem_classes=["lt-msg"])
        report = gr.Markdown("", elem_id="lt-prepare-report")
        pics = gr.Gallery(label=t("Before · after"), columns=6, height="auto", elem_id="lt-prepare-gallery")
    return {"controls": ctrls, "run": run_btn, "cancel": cancel_btn, "progress": progress, "msg": msg,
            "report": report, "gallery": pics, **dl}


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    outs = [parts["progress"], parts["gallery"], parts["report"], parts["msg"]]
    inputs = [ctx.project] + [parts["controls"][n] for n in names()]
    parts["run_event"] = parts["run"].click(guard_gen(4, ctx.t)(lambda p, *v: run(ctx, p, *v)), inputs, outs)
    wire_cancel(ctx, parts["cancel"], parts["msg"], KINDS)
    model_download.wire(ctx, parts, parts["controls"]["background"], parts["msg"], lambda n: n)


def on_project(ctx: Ctx, parts: dict):
    def load(p):
        pics, rep = results(ctx.service, p, None) if p else ([], "")
        return [pics, rep, ""]
    return [parts["gallery"], parts["report"], parts["msg"]], load
