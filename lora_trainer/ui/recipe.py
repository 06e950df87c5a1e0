""""Do the rest with the recipe": the steps not yet done, one job after another, with the options the
steps show now (the recipe's defaults unless the user changed them).

What counts as done: a dataset folder with images (step 2), a caption beside every image (step 3; skipped
when the tagger is ``none``). The LR estimate runs when ticked and its proposal is used for training (the
preset's lr where the estimate's caveat recommends it); the last job draws test images with the final file.
Cancel stops the current job and the rest of the chain.
"""

from __future__ import annotations

from typing import Optional

from ..errors import UserError
from ..prepare.config import TagConfig
from . import controls as C
from . import step_estimate, step_prepare, step_tag, step_train
from .common import Ctx, done_text, guard_gen, need_project, progress_html, stop_sequence, watch

ALL_KINDS = ("preprocess", "tag", "estimate", "train", "generate")


def missing_captions(service, project: str) -> int:
    from ..training.data import read_caption

    folder = service.dataset_dir(project)
    return sum(read_caption(folder / n) is None for n in service.images(project, "dataset"))


def plan(service, project: str, tagger: str, estimate: bool) -> list[str]:
    """The steps still to run, in order."""
    if not service.images(project, "source") and not service.images(project, "dataset"):
        raise UserError("the project has no images", "add images in step 1 first")
    todo = []
    if not service.images(project, "dataset"):
        todo.append("preprocess")
    if tagger and tagger != "none" and ("preprocess" in todo or missing_captions(service, project)):
        todo.append("tag")
    if estimate:
        todo.append("estimate")
    return todo + ["train", "generate"]


def run(ctx: Ctx, project: Optional[str], estimate: bool, n_prep: int, n_tag: int, *values,
        tagger_names: Optional[dict] = None):
    """Generator: [progress, gallery, message]. ``values``: prepare controls, tagger, trigger, tag options,
    train controls (``n_prep`` and ``n_tag`` say where each part ends); ``tagger_names``: the tagger
    dropdown's label → name."""
    import gradio as gr

    t, svc = ctx.t, ctx.service
    name = need_project(project)
    prep_vals = values[:n_prep]
    tagger, trigger = values[n_prep], values[n_prep + 1]
    tagger = (tagger_names or {}).get(tagger, tagger)
    tag_vals = values[n_prep + 2:n_prep + 2 + n_tag]
    train_ov = step_train.overrides(values[n_prep + 2 + n_tag:])
    todo = plan(svc, name, tagger, estimate)
    ctx.stops.discard((name, "recipe"))
    lrs: dict = {}
    output = None
    for k, step in enumerate(todo, 1):
        label = t("step {k} of {n}: {what}", k=k, n=len(todo), what=t(STEP_NAMES[step]))
        if step == "preprocess":
            job = svc.preprocess(name, C.collect(step_prepare.PrepareConfig, step_prepare.names(), prep_vals))
        elif step == "tag":
            job = svc.autotag(name, {"tagger": tagger, "trigger": trigger or "",
                                     **C.collect(TagConfig, step_tag.OPTION_NAMES, tag_vals)})
        elif step == "estimate":
            job = svc.estimate(name, train_ov)
        elif step == "train":
            job = svc.train(name, {**train_ov, **lrs})
        else:
            if not output:
                break
            prompt = svc.project_info(name).get("trigger") or name
            job = svc.generate(name, [prompt], lora=output, seeds=(1, 2), steps=20)
        for st in watch(svc, job, ctx.poll):
            shown = dict(st, progress=dict(st.get("progress") or {}, phase=label))
            yield [progress_html(shown, t), gr.update(), ""]
        res = st.get("result") or {}
        if st["status"] != "finished" or (name, "recipe") in ctx.stops:
            if step == "estimate" and res.get("unet_lr") and (name, "recipe") not in ctx.stops:
                lrs = step_estimate.recommended(res)
                continue  # a probe stopped by its own cancel still proposes a value
            ctx.stops.discard((name, "recipe"))
            yield [progress_html(shown, t), gr.update(), label + " — " + done_text(st, t)]
            return
        if step == "estimate":
            lrs = step_estimate.recommended(res)
        if step == "train":
            output = res.get("output") and res["output"].replace("\\", "/").rsplit("/", 1)[-1]
        if step == "generate":
            folder = svc.runner.job_dir(job)
            yield [progress_html(st, t), [str(folder / f) for f in res.get("images", [])],
                   t("Done: {file}. Compare the saves in the Test step.", file=output)]
            return
    yield [progress_html(st, t), gr.update(), t("Done.")]


STEP_NAMES = {"preprocess": "Crop & background", "tag": "Auto-tag", "estimate": "Estimate LR", "train": "Train",
              "generate": "Test"}


def build(ctx: Ctx) -> dict:
    import gradio as gr

    t = ctx.t
    with gr.Accordion(t("Do the rest with the recipe"), open=False, elem_id="lt-recipe-box"):
        gr.Markdown(t("Runs every step not done yet with the options shown in the steps (the recipe's defaults "
                      "unless you changed them), then draws two test images."), elem_classes=["lt-help"])
        with gr.Row():
            estimate = gr.Checkbox(value=True, label=t("Estimate the LR first"), elem_id=ctx.tip(
                "lt-recipe-estimate", "Run the LR probe and train with its proposal"))
            run_btn = gr.Button(t("Do the rest with the recipe"), variant="primary", interactive=ctx.can_train,
                                elem_id=ctx.tip("lt-recipe-run", "Run the remaining steps one after another"))
            cancel_btn = gr.Button(t("Cancel"), elem_id=ctx.tip("lt-recipe-cancel", "Stop the current step and the rest"))
        progress = gr.HTML(progress_html(None), elem_id="lt-recipe-progress")
        msg = gr.Markdown("", elem_id="lt-recipe-msg", elem_classes=["lt-msg"])
        pics = gr.Gallery(label=t("Test images"), columns=4, height="auto", elem_id="lt-recipe-gallery")
    return {"estimate": estimate, "run": run_btn, "cancel": cancel_btn, "progress": progress, "msg": msg,
            "gallery": pics}


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    prep, tag, train = steps["prepare"], steps["tag"], steps["train"]
    prep_ctrls = [prep["controls"][n] for n in step_prepare.names()]
    tag_ctrls = [tag["controls"][n] for n in step_tag.OPTION_NAMES]
    n_prep, n_tag = len(prep_ctrls), len(tag_ctrls)
    inputs = [ctx.project, parts["estimate"], *prep_ctrls, tag["tagger"], tag["trigger"], *tag_ctrls,
              *step_train.control_list(train)]
    names = tag["tagger_names"]
    parts["run_event"] = parts["run"].click(
        guard_gen(3, ctx.t)(lambda p, e, *v: run(ctx, p, e, n_prep, n_tag, *v, tagger_names=names)), inputs,
        [parts["progress"], parts["gallery"], parts["msg"]])
    parts["cancel"].click(lambda p: stop_sequence(ctx, p, "recipe", ALL_KINDS), [ctx.project], [parts["msg"]],
                          queue=False)
