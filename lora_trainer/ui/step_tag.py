"""Step 3 · Auto-tag: ``Service.autotag`` over the project's dataset folder, captions shown beside images.

The tagger list comes from ``tagging.registry.describe_taggers`` (the WebUI adapter adds Deepbooru and CLIP),
each marked when it cannot run here and why, so a missing model is said at once and never hangs. Proposed
(``propose_tagger``): the host's Deepbooru, else the toy tagger on the toy model, else the WD v3 ViT tagger;
a Download button beside the choice fetches a store model whose files are missing (``model_download``).
"""

from __future__ import annotations

from typing import Optional

from ..prepare.config import TagConfig
from . import controls as C
from . import model_download
from .common import EN, Ctx, done_text, guard_gen, need_project, plain_choices, progress_html, watch, wire_cancel

KINDS = ("tag",)
OPTION_NAMES = [n for n in C.groups(TagConfig)["tagging"] if n not in ("tagger", "trigger")]


def tagger_choices(t=EN, cfg=None, preferred: Optional[str] = None, toy_model: bool = False
                   ) -> tuple[list, str, list[str]]:
    """(dropdown choices as (label, name), the proposed name, notes about the unavailable ones).

    The dropdown itself gets the labels (``common.plain_choices``): gradio 3.41's Dropdown shows a pair as
    its repr and sends that back, so the handler maps the label to the name.

    ``preferred`` (the WebUI setting "default tagger") is proposed when it is available; else
    ``propose_tagger``'s order."""
    from ..tagging.registry import describe_taggers

    info = describe_taggers(cfg)
    choices, notes = [], []
    for d in info:
        label = d["name"] if d["available"] else t("{name} (unavailable)", name=d["name"])
        choices.append((label, d["name"]))
        if not d["available"]:
            notes.append(f"{d['name']}: {d['reason']}")
    return choices, propose_tagger(info, preferred, toy_model), notes


DEFAULT_TAGGER = "wd-vit-tagger-v3"


def on_toy_model(service) -> bool:
    """Whether the service trains the embedded toy model (standalone without ``--base-model``)."""
    return getattr(service.models, "base_model", "") is None


def propose_tagger(info: list[dict], preferred: Optional[str] = None, toy_model: bool = False) -> str:
    """The tagger the tab proposes, from ``describe_taggers``: the setting's when available, else the host's
    Deepbooru, else the toy tagger on the embedded toy model (it knows the toy world's words), else the WD v3
    ViT tagger — even when its files are missing, since the Download button beside the choice fetches them
    (standalone on a user's model, and hosts without Deepbooru such as Forge Neo) — else toy, wd14."""
    ok = [d["name"] for d in info if d["available"]]
    known = {d["name"] for d in info}
    if preferred and preferred in ok:
        return preferred
    if "deepbooru" in ok:
        return "deepbooru"
    if toy_model and "toy" in ok:
        return "toy"
    if DEFAULT_TAGGER in known:
        return DEFAULT_TAGGER
    return next((n for n in ("toy", "wd14") if n in ok), next(iter(ok[1:]), "none"))


def captions(service, project: Optional[str]) -> list:
    """``(image, caption)`` for the gallery: what training will read for each image."""
    if not project:
        return []
    folder = service.dataset_dir(project)
    from ..training.data import read_caption

    out = []
    for name in service.images(project, "dataset"):
        img = folder / name
        out.append((str(img), read_caption(img) or "(no caption)"))
    return out


def run(ctx: Ctx, project: Optional[str], tagger: str, trigger: str, *values, names: Optional[dict] = None):
    """Generator: [progress, gallery, message]. ``names``: the dropdown's label → tagger name."""
    import gradio as gr

    name = need_project(project)
    tagger = (names or {}).get(tagger, tagger)
    opts = {"tagger": tagger or "none", "trigger": trigger or "", **C.collect(TagConfig, OPTION_NAMES, values)}
    job = ctx.service.autotag(name, opts)
    for st in watch(ctx.service, job, ctx.poll):
        done = st["status"] in ("finished", "cancelled", "failed")
        pics = captions(ctx.service, name) if done and st["status"] != "failed" else gr.update()
        msg = done_text(st, ctx.t) if done else ""
        if st["status"] == "finished":
            result = st.get("result") or {}
            msg += " " + ", ".join(f"{k}: {v}" for k, v in (result.get("counts") or {}).items())
            skipped = result.get("skipped") or []
            if skipped:
                msg += "\n" + ctx.t("Skipped:") + " " + "; ".join(
                    f"{f['file']} ({f.get('reason', '')})" for f in skipped[:10]) + (" …" if len(skipped) > 10 else "")
        yield [progress_html(st, ctx.t), pics, msg]


def build(ctx: Ctx) -> dict:
    import gradio as gr

    t = ctx.t
    pairs, proposed, notes = tagger_choices(t, preferred=ctx.host.get("default_tagger"),
                                              toy_model=on_toy_model(ctx.service))
    labels, names = plain_choices(pairs)
    with gr.Column(elem_id="lt-tag"):
        gr.Markdown(t("Write a caption of tags for every image; the trigger word goes first."),
                    elem_classes=["lt-help"])
        with gr.Row():
            label_of = {v: k for k, v in names.items()}
            tagger = gr.Dropdown(choices=labels, value=label_of.get(proposed, proposed), label=t("Tagger"),
                                 elem_id=ctx.tip("lt-tag-tagger", C.field_meta_help(TagConfig, "tagger")))
            trigger = gr.Textbox(label=t("Trigger"), elem_id=ctx.tip("lt-tag-trigger",
                                                                     C.field_meta_help(TagConfig, "trigger")))
        dl = model_download.build(ctx, "lt-tag-tagger", proposed)  # beside the choice: a missing WD v3 model
        if notes:
            gr.Markdown("\n".join(f"- {n}" for n in notes), elem_id="lt-tag-note", elem_classes=["lt-note"])
        with gr.Accordion(t("Tagging"), open=False, elem_id="lt-tag-group-tagging"):
            ctrls = {}
            for i in range(0, len(OPTION_NAMES), 3):
                with gr.Row():
                    ctrls.update(C.make_controls(TagConfig, OPTION_NAMES[i:i + 3], t, ctx.tips, "lt-tag"))
        with gr.Row():
            run_btn = gr.Button(t("Tag images"), variant="primary",
                                elem_id=ctx.tip("lt-tag-run", "Caption every image of the dataset folder"))
            cancel_btn = gr.Button(t("Cancel"), elem_id=ctx.tip("lt-tag-cancel", "Stop after the current batch"))
        progress = gr.HTML(progress_html(None), elem_id="lt-tag-progress")
        msg = gr.Markdown("", elem_id="lt-tag-msg", elem_classes=["lt-msg"])
        pics = gr.Gallery(label=t("Images and captions"), columns=6, height="auto", elem_id="lt-tag-gallery")
    return {"tagger": tagger, "tagger_names": names, "trigger": trigger, "controls": ctrls, "run": run_btn,
            "cancel": cancel_btn, "progress": progress, "msg": msg, "gallery": pics, **dl}


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    outs = [parts["progress"], parts["gallery"], parts["msg"]]
    inputs = [ctx.project, parts["tagger"], parts["trigger"]] + [parts["controls"][n] for n in OPTION_NAMES]
    names = parts["tagger_names"]
    parts["run_event"] = parts["run"].click(guard_gen(3, ctx.t)(lambda p, *v: run(ctx, p, *v, names=names)),
                                            inputs, outs)
    wire_cancel(ctx, parts["cancel"], parts["msg"], KINDS)
    model_download.wire(ctx, parts, parts["tagger"], parts["msg"], lambda label: refreshed_choice(ctx, names, label),
                        to_name=lambda label: names.get(label, label))


def refreshed_choice(ctx: Ctx, names: dict, label: str):
    """The tagger dropdown after a download: its labels say the model is available now. ``names`` (label →
    tagger, what the handlers read) learns the new labels; the old ones keep mapping to their tagger."""
    import gradio as gr

    name = names.get(label, label)
    labels, fresh = plain_choices(tagger_choices(ctx.t, preferred=ctx.host.get("default_tagger"),
                                                 toy_model=on_toy_model(ctx.service))[0])
    names.update(fresh)
    return gr.update(choices=labels, value={v: k for k, v in fresh.items()}.get(name, label))


def on_project(ctx: Ctx, parts: dict):
    def load(p):
        trig = ctx.service.project_info(p).get("trigger", "") if p else ""
        return [captions(ctx.service, p), trig, ""]
    return [parts["gallery"], parts["trigger"], parts["msg"]], load
