"""Step 5 · Estimate LR: ``Service.estimate`` with the Train step's settings, the d·lr plot, the proposed
learning rates, and "Use these", which copies them into the Train step's controls.

The probe trains the real dataset and network with an adaptive optimizer and stops by itself on a plateau
(``training/estimate.py``); Cancel stops it early and still proposes where the curve got to.
"""

from __future__ import annotations

from typing import Optional

from .common import Ctx, done_text, guard, guard_gen, need_project, progress_html, project_jobs, watch, \
    wire_cancel

KINDS = ("estimate",)


def summary(t, res: dict) -> str:
    """The proposal as the user reads it."""
    if not res:
        return ""
    lines = [t("Proposed UNet LR **{u}**, text-encoder LR **{te}** (d·lr {d:.3g} after {n} steps; {why}).",
               u=res.get("unet_lr"), te=res.get("text_encoder_lr"), d=float(res.get("d_lr") or 0.0),
               n=res.get("steps"), why=t(reason_text(res.get("reason", ""))))]
    adaptive = res.get("adaptive") or {}
    if adaptive:
        lines.append(t("Alternatively train with {opt} itself at LR 1.0.", opt=adaptive.get("optimizer")))
    return "\n\n".join(lines)


def reason_text(reason: str) -> str:
    return {"plateau": "the curve levelled off", "cap": "the step cap was reached",
            "cancelled": "stopped by you", "end": "the data ran out"}.get(reason, reason)


def last_result(service, project: Optional[str]) -> dict:
    """The newest estimate of this project that produced a value (finished, or cancelled with a curve)."""
    if not project:
        return {}
    for st in reversed(project_jobs(service, project, KINDS)):
        res = st.get("result") or {}
        if res.get("unet_lr"):
            return res
    return {}


def view(t, res: dict) -> list:
    """[plot, summary, use button] for a result."""
    import gradio as gr

    plot = res.get("plot") if res and res.get("plot") else None
    return [plot, summary(t, res), gr.update(interactive=bool(res.get("unet_lr")))]


def run(ctx: Ctx, project: Optional[str], *values):
    """Generator: [progress, plot, summary, use button, result state, message]."""
    import gradio as gr

    from .step_train import overrides

    name = need_project(project)
    job = ctx.service.estimate(name, overrides(values))
    for st in watch(ctx.service, job, ctx.poll):
        res = st.get("result") or {}
        if st["status"] in ("queued", "running"):
            yield [progress_html(st, ctx.t), gr.update(), gr.update(), gr.update(), gr.update(), ""]
        elif res.get("unet_lr"):
            yield [progress_html(st, ctx.t), *view(ctx.t, res), res, done_text(st, ctx.t)]
        else:
            yield [progress_html(st, ctx.t), gr.update(), gr.update(), gr.update(), gr.update(), done_text(st, ctx.t)]


def use(t, res: Optional[dict]) -> list:
    """[unet_lr, text_encoder_lr, message] for the Train step."""
    import gradio as gr

    if not res or not res.get("unet_lr"):
        return [gr.update(), gr.update(), "⚠ " + t("Run the estimate first.")]
    return [res["unet_lr"], res["text_encoder_lr"],
            t("The Train step now uses UNet LR {u} and text-encoder LR {te}.", u=res["unet_lr"],
              te=res["text_encoder_lr"])]


def build(ctx: Ctx) -> dict:
    import gradio as gr

    t = ctx.t
    res = last_result(ctx.service, ctx.initial_project)
    with gr.Column(elem_id="lt-estimate"):
        gr.Markdown(t("Finds a learning rate for your images: a short run with an adaptive optimizer measures "
                      "the step size d·lr until it levels off. It uses the Train step's settings."),
                    elem_classes=["lt-help"])
        with gr.Row():
            run_btn = gr.Button(t("Estimate LR"), variant="primary", interactive=ctx.can_train,
                                elem_id=ctx.tip("lt-estimate-run", "Run the LR probe on this project's dataset"))
            cancel_btn = gr.Button(t("Cancel"), elem_id=ctx.tip(
                "lt-estimate-cancel", "Stop the probe now and propose where the curve got to"))
        progress = gr.HTML(progress_html(None), elem_id="lt-estimate-progress")
        msg = gr.Markdown("", elem_id="lt-estimate-msg", elem_classes=["lt-msg"])
        with gr.Row():
            plot = gr.Image(value=res.get("plot") or None, label=t("d·lr"), type="filepath", interactive=False,
                            elem_id="lt-estimate-plot")
            with gr.Column():
                text = gr.Markdown(summary(t, res), elem_id="lt-estimate-summary")
                use_btn = gr.Button(t("Use these"), interactive=bool(res.get("unet_lr")), elem_id=ctx.tip(
                    "lt-estimate-use", "Copy the proposed learning rates into the Train step"))
        state = gr.State(res)
    return {"run": run_btn, "cancel": cancel_btn, "progress": progress, "msg": msg, "plot": plot, "summary": text,
            "use": use_btn, "state": state}


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    from .step_train import control_list

    t = ctx.t
    train = steps["train"]
    outs = [parts["progress"], parts["plot"], parts["summary"], parts["use"], parts["state"], parts["msg"]]
    parts["run_event"] = parts["run"].click(guard_gen(6, t)(lambda p, *v: run(ctx, p, *v)),
                                            [ctx.project] + control_list(train), outs)
    wire_cancel(ctx, parts["cancel"], parts["msg"], KINDS)
    parts["use"].click(guard(3, t)(lambda r: use(t, r)), [parts["state"]],
                       [train["controls"]["unet_lr"], train["controls"]["text_encoder_lr"], parts["msg"]])


def on_project(ctx: Ctx, parts: dict):
    def load(p):
        res = last_result(ctx.service, p)
        return [*view(ctx.t, res), res, ""]
    return [parts["plot"], parts["summary"], parts["use"], parts["state"], parts["msg"]], load
