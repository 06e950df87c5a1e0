"""Step 5 · Estimate LR: ``Service.estimate`` with the Train step's settings and the probe's own image size
and step cap (shown, defaulting from the model's preset, with a measured forecast), the d·lr plot, the
proposed learning rates with a caveat when the preset's lr is more than ×2 away, and "Use these", which
copies them into the Train step's controls.

The probe trains the real dataset and network with an adaptive optimizer and stops by itself on a plateau;
a range test then caps the proposal at the highest lr measured stable (``training/estimate.py``); Cancel
stops it early and still proposes where the curve got to.
"""

from __future__ import annotations

import dataclasses
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
    bound = res.get("bound") or {}
    if res.get("limited_by") == "range test" and bound:
        lines.append(t("Capped by the range test: its loss was lowest at LR {best:.3g} and rose from {rise:.3g}; "
                       "D-Adaptation's plateau {p:.3g} is above what the range test measured stable.",
                       best=float(bound["best_lr"]), rise=float(bound["rise_lr"]), p=float(res.get("plateau_lr") or 0)))
    adv = res.get("advice")
    if adv:
        which = t("the preset's") if adv.get("recommend") == "preset" else t("the estimate's")
        lines.append("⚠ " + t("The estimate is ×{r:.2f} of {src} LR {p:.3g}, more than ×2 apart. Recommended: "
                              "{which} **{lr:.3g}**, the lower one (too high an LR breaks a LoRA, too low only "
                              "learns slower).", r=float(adv["ratio"]), src=t(adv.get("source", "the preset")),
                              p=float(adv["preset_lr"]), which=which, lr=float(adv["lr"])))
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


# --------------------------------------------------------------------------------------------- the probe's own settings

def probe_defaults(service) -> dict:
    """The probe's image size and step cap before the user changes them: the model preset's (its
    ``resolution``, ``probe_max_steps``), else the recipe's resolution and the plateau rule's cap."""
    from ..config import TrainConfig
    from ..training.plateau import PlateauRule

    preset = service.models.preset() or {}
    return {"resolution": int(preset.get("resolution") or TrainConfig.resolution),
            "max_steps": int(preset.get("probe_max_steps") or PlateauRule.max_steps)}


def last_probe(service, project: Optional[str]) -> dict:
    """The probe's size and step cap of this project's newest estimate (its job config), else the defaults:
    a reloaded page shows what the result beside them was measured with."""
    d = probe_defaults(service)
    if project:
        for st in reversed(project_jobs(service, project, KINDS)):
            cfg = st.get("config") or {}
            res, cap = (cfg.get("train") or {}).get("resolution"), (cfg.get("rule") or {}).get("max_steps")
            if res and cap:
                return {"resolution": int(res), "max_steps": int(cap)}
    return d


def probe_settings(resolution, max_steps) -> dict:
    """The two controls as ``Service.estimate``'s ``probe`` settings (refused when not whole numbers ≥ 1)."""
    from ..errors import UserError

    try:
        res, cap = int(resolution), int(max_steps)
    except (TypeError, ValueError):
        raise UserError("the probe's size and step cap must be whole numbers", "e.g. 512 px and 600 steps") from None
    if res < 32 or cap < 1:
        raise UserError(f"probe size {res} px / step cap {cap} is too small", "use at least 32 px and 1 step")
    return {"resolution": res, "max_steps": cap}


def probe_text(t, resolution, max_steps, fc: Optional[dict] = None) -> str:
    """What the probe will do, and with a measured forecast how long it takes at most."""
    from ..training.estimate import RANGE_STEPS
    from ..training.plateau import PlateauRule
    from .common import fmt_seconds

    least = PlateauRule.window + PlateauRule.smooth - 1
    if int(max_steps) > least:
        line = t("The probe trains at **{res} px** for at most **{cap} steps** (it stops sooner, from about {least} "
                 "steps, once d·lr levels off), then {r} range-test steps.", res=int(resolution), cap=int(max_steps),
                 least=least, r=RANGE_STEPS)
    else:  # a cap below the plateau rule's least: the probe always runs to the cap
        line = t("The probe trains at **{res} px** for **{cap} steps** (a cap below the {least} steps the plateau "
                 "rule needs: its value is where d·lr got by then), then {r} range-test steps.",
                 res=int(resolution), cap=int(max_steps), least=least, r=RANGE_STEPS)
    if fc:
        sps = float(fc["seconds_per_step"])
        most = (int(max_steps) + 2 * RANGE_STEPS) * sps + float(fc.get("cache_seconds") or 0)  # a range step ≈ 2
        line += " " + t("Forecast: at most ~{time} ({sps:.3g} s/step on {device}).", time=fmt_seconds(most),
                        sps=sps, device=fc.get("device", ""))
    else:
        line += " " + t("Press Forecast for the time it takes at most.")
    return line


def forecast(ctx: Ctx, project: Optional[str], resolution, max_steps, *values):
    """Generator: [probe box, message] — the measured forecast of the probe (a few steps at its settings)."""
    import gradio as gr

    from ..training.data import scan_dataset
    from ..training.estimate import probe_config, probe_resolution
    from .step_train import overrides, submit_forecast

    name = need_project(project)
    probe = probe_settings(resolution, max_steps)
    cfg = probe_resolution(ctx.service.train_config(name, overrides(values)), probe["resolution"])
    scan = scan_dataset(ctx.service.dataset_dir(name), cfg.repeats)
    # the probe's own config (adaptive optimizer, epochs enough for the cap): the forecast counts its steps
    job = submit_forecast(ctx.service, name, dataclasses.asdict(probe_config(cfg, scan.num_samples,
                                                                             max_steps=probe["max_steps"])))
    for st in watch(ctx.service, job, ctx.poll):
        if st["status"] == "finished":
            yield [probe_text(ctx.t, probe["resolution"], probe["max_steps"], st.get("result") or {}), ""]
        elif st["status"] in ("failed", "cancelled", "interrupted"):
            yield [gr.update(), done_text(st, ctx.t)]
        else:
            yield [gr.update(), ctx.t("Measuring a few steps…")]


def run(ctx: Ctx, project: Optional[str], resolution, max_steps, *values):
    """Generator: [progress, plot, summary, use button, result state, message]."""
    import gradio as gr

    from .step_train import overrides

    name = need_project(project)
    job = ctx.service.estimate(name, overrides(values), probe=probe_settings(resolution, max_steps))
    for st in watch(ctx.service, job, ctx.poll):
        res = st.get("result") or {}
        if st["status"] in ("queued", "running"):
            yield [progress_html(st, ctx.t), gr.update(), gr.update(), gr.update(), gr.update(), ""]
        elif res.get("unet_lr"):
            yield [progress_html(st, ctx.t), *view(ctx.t, res), res, done_text(st, ctx.t)]
        else:
            yield [progress_html(st, ctx.t), gr.update(), gr.update(), gr.update(), gr.update(), done_text(st, ctx.t)]


def recommended(res: dict) -> dict:
    """The lrs to train with: the estimate's, or the preset's when the caveat recommends it (the recipe)."""
    adv = res.get("advice") or {}
    if adv.get("recommend") == "preset" and res.get("unet_lr"):
        ratio = float(res["text_encoder_lr"]) / float(res["unet_lr"])
        return {"unet_lr": float(adv["preset_lr"]), "text_encoder_lr": float(f"{adv['preset_lr'] * ratio:.3g}")}
    return {"unet_lr": res["unet_lr"], "text_encoder_lr": res["text_encoder_lr"]}


def use(t, res: Optional[dict]) -> list:
    """[unet_lr, text_encoder_lr, message] for the Train step."""
    import gradio as gr

    if not res or not res.get("unet_lr"):
        return [gr.update(), gr.update(), "⚠ " + t("Run the estimate first.")]
    msg = t("The Train step now uses UNet LR {u} and text-encoder LR {te}.", u=res["unet_lr"],
            te=res["text_encoder_lr"])
    adv = res.get("advice")
    if adv and adv.get("recommend") == "preset":
        msg += " ⚠ " + t("The preset's LR {p:.3g} is recommended over this estimate (see above).",
                         p=float(adv["preset_lr"]))
    return [res["unet_lr"], res["text_encoder_lr"], msg]


def build(ctx: Ctx) -> dict:
    import gradio as gr

    t = ctx.t
    res = last_result(ctx.service, ctx.initial_project)
    with gr.Column(elem_id="lt-estimate"):
        gr.Markdown(t("Finds a learning rate for your images: a short run with an adaptive optimizer measures "
                      "the step size d·lr until it levels off, then a range test caps it at the highest LR it "
                      "measured stable. It uses the Train step's settings at the probe's own size and step cap."),
                    elem_classes=["lt-help"])
        d = last_probe(ctx.service, ctx.initial_project)
        with gr.Row():
            probe_res = gr.Number(value=d["resolution"], label=t("Probe size (px)"), precision=0,
                                  elem_id=ctx.tip("lt-estimate-resolution", "Image size the probe trains at; "
                                                  "the default is the model preset's. Smaller is faster."))
            probe_cap = gr.Number(value=d["max_steps"], label=t("Probe step cap"), precision=0,
                                  elem_id=ctx.tip("lt-estimate-max-steps", "The probe stops here even if d·lr is "
                                                  "still rising"))
            fc_btn = gr.Button(t("Forecast"), elem_id=ctx.tip(
                "lt-estimate-forecast-run", "Measure a few probe steps: how long the estimate takes at most"))
        probe_box = gr.Markdown(probe_text(t, d["resolution"], d["max_steps"]), elem_id="lt-estimate-probe")
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
            "use": use_btn, "state": state, "resolution": probe_res, "max_steps": probe_cap, "forecast": fc_btn,
            "probe": probe_box}


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    from .step_train import control_list

    t = ctx.t
    train = steps["train"]
    outs = [parts["progress"], parts["plot"], parts["summary"], parts["use"], parts["state"], parts["msg"]]
    probe_in = [ctx.project, parts["resolution"], parts["max_steps"]] + control_list(train)
    parts["run_event"] = parts["run"].click(guard_gen(6, t)(lambda p, r, c, *v: run(ctx, p, r, c, *v)), probe_in, outs)
    parts["forecast"].click(guard_gen(2, t)(lambda p, r, c, *v: forecast(ctx, p, r, c, *v)), probe_in,
                            [parts["probe"], parts["msg"]])
    box = guard(2, t)(lambda r, c: [probe_text(t, **probe_settings(r, c)), ""])
    for n in ("resolution", "max_steps"):
        parts[n].change(box, [parts["resolution"], parts["max_steps"]], [parts["probe"], parts["msg"]])
    wire_cancel(ctx, parts["cancel"], parts["msg"], KINDS)
    parts["use"].click(guard(3, t)(lambda r: use(t, r)), [parts["state"]],
                       [train["controls"]["unet_lr"], train["controls"]["text_encoder_lr"], parts["msg"]])


def on_project(ctx: Ctx, parts: dict):
    def load(p):
        res = last_result(ctx.service, p)
        probe = last_probe(ctx.service, p)
        return [*view(ctx.t, res), res, "", probe["resolution"], probe["max_steps"],
                probe_text(ctx.t, probe["resolution"], probe["max_steps"])]
    return [parts["plot"], parts["summary"], parts["use"], parts["state"], parts["msg"], parts["resolution"],
            parts["max_steps"], parts["probe"]], load
