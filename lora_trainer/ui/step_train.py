"""Step 6 · Train: every ``TrainConfig`` option grouped as the dataclass groups them, the forecast before
the run, then ``Service.train`` with its progress, loss curve, cancel and resume.

The forecast has two levels. Steps (images × repeats × epochs ÷ batch, by the trainer's own bucket rule)
are computed at once from the image headers. Minutes and peak memory need a measured step: "Measure" runs
``training.forecast.forecast_run`` as a job (a few warm-up steps on the real model, inside the JobRunner
like all model work), and without it the last finished run of the project gives a seconds-per-step figure.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

from .. import paths
from ..config import TrainConfig
from . import controls as C
from . import plots
from .common import Ctx, done_text, fmt_seconds, guard, guard_gen, need_project, progress_html, \
    project_jobs, watch, wire_cancel

NAMES = [f.name for f in dataclasses.fields(TrainConfig)]
KINDS = ("train",)
STEP_INPUTS = ("repeats", "epochs", "batch_size", "max_steps", "gradient_accumulation_steps")
PLOT_EVERY = 2.0


def overrides(values) -> dict:
    return C.collect(TrainConfig, NAMES, values)


def config_for(service, project: Optional[str]) -> dict:
    """The project's saved config under the model's preset (what the controls show when it is opened); a
    project not trained yet gets the sizes proposed for the device (``config.device_defaults``: smaller on a
    CPU)."""
    from .proposals import proposed, saved_config

    if not project:
        from ..config import from_dict

        return dataclasses.asdict(from_dict(TrainConfig, {**(service.models.preset() or {}),
                                                          **proposed(service)["train"]}))
    if saved_config(service, project):
        return dataclasses.asdict(service.train_config(project))
    return dataclasses.asdict(service.train_config(project, proposed(service)["train"]))


# --------------------------------------------------------------------------------------------- forecast

def planned(service, project: str, ov: dict) -> tuple[int, object, TrainConfig]:
    """(total steps, the dataset scan, the config) without loading a model."""
    from ..training.data import scan_dataset

    cfg = service.train_config(project, ov)
    scan = scan_dataset(service.dataset_dir(project), cfg.repeats)
    try:
        from ..training.forecast import planned_steps

        steps = planned_steps(scan, cfg)
    except ImportError:
        from ..training.loop import forecast

        steps = forecast(cfg, scan.num_samples)["steps"]
    return steps, scan, cfg


def last_seconds_per_step(service, project: str) -> Optional[float]:
    """Seconds per step of this project's newest finished training run, if any."""
    for st in reversed(project_jobs(service, project, KINDS)):
        res = st.get("result") or {}
        if st.get("status") == "finished" and res.get("steps") and res.get("seconds"):
            return float(res["seconds"]) / float(res["steps"])
    return None


def forecast_text(ctx: Ctx, project: Optional[str], *values) -> str:
    t = ctx.t
    name = need_project(project)
    if not ctx.service.images(name, "dataset"):
        return t("No dataset yet: run Crop & background first.")
    steps, scan, cfg = planned(ctx.service, name, overrides(values))
    line = t("{images} images × {repeats} repeats × {epochs} epochs ÷ batch {batch} = **{steps} steps**",
             images=scan.num_images, repeats=cfg.repeats, epochs=cfg.epochs, batch=cfg.batch_size, steps=steps)
    if cfg.max_steps:
        line += " " + t("(capped by max steps {n})", n=cfg.max_steps)
    sps = last_seconds_per_step(ctx.service, name)
    if sps:
        line += " · " + t("~{time} at the last run's {sps:.3g} s/step", time=fmt_seconds(steps * sps), sps=sps)
    else:
        line += " · " + t("press Measure for time and memory")
    if scan.missing_captions:
        line += "\n\n⚠ " + t("{n} image(s) have no caption and would train on the folder name, e.g. {file}",
                              n=len(scan.missing_captions), file=scan.missing_captions[0].name)
    if scan.left_out:
        line += "\n\n⚠ " + t("{n} file(s) in a format training does not read are left out, e.g. {file}: run Crop & "
                              "background on them", n=len(scan.left_out), file=scan.left_out[0].name)
    return line


def submit_forecast(service, project: str, ov: dict) -> str:
    """The measured forecast as a job (``Service.forecast`` when the service has one)."""
    if hasattr(service, "forecast"):
        return service.forecast(project, ov)
    cfg = service.train_config(project, ov)
    data = service.dataset_dir(project)

    def job(jctx) -> dict:
        from ..training.forecast import forecast_run

        return forecast_run(service.models.backend(), data, cfg)

    return service.runner.submit("forecast", job, config={"project": project, "train": dataclasses.asdict(cfg)},
                                 parent=service.project(project).jobs)


def measure(ctx: Ctx, project: Optional[str], *values):
    """Generator: [forecast box, message]."""
    import gradio as gr

    name = need_project(project)
    base = forecast_text(ctx, name, *values)
    job = submit_forecast(ctx.service, name, overrides(values))
    for st in watch(ctx.service, job, ctx.poll):
        if st["status"] == "finished":
            fc = st.get("result") or {}
            try:
                from ..training.forecast import format_forecast

                yield [base + "\n\n" + format_forecast(fc), ""]
            except ImportError:
                yield [base, ""]
        elif st["status"] in ("failed", "cancelled", "interrupted"):
            yield [gr.update(), done_text(st, ctx.t)]
        else:
            yield [gr.update(), ctx.t("Measuring a few steps…")]


# --------------------------------------------------------------------------------------------- the run

def resumable(service, project: Optional[str]) -> list[str]:
    """Labels of this project's stopped runs that left a training state to continue from, each starting with
    the job id (``resume_id`` reads it back: gradio 3.41's Dropdown takes plain strings only)."""
    if not project:
        return []
    out = []
    for st in project_jobs(service, project, KINDS):
        if st["status"] in ("cancelled", "interrupted", "failed") and \
                (service.runner.job_dir(st["id"]) / "state" / "latest.json").is_file():
            p = st.get("progress") or {}
            out.append(f"{st['id']} ({st['status']} at step {p.get('step', '?')}/{p.get('total', '?')})")
    return out[::-1]


def resume_id(label: Optional[str]) -> Optional[str]:
    """The job id a ``resumable`` label starts with (a job id has no spaces)."""
    return label.split(" ", 1)[0] if label else None


def outputs_text(service, project: str) -> str:
    files = service.outputs(project)
    return "\n".join(f"- `{f['name']}` ({f['bytes'] // 1024} KiB)" for f in files)


def follow(ctx: Ctx, project: str, job: str):
    """Generator over a training job: [progress, loss plot, samples, outputs, resume choices, message]."""
    import gradio as gr

    log_file = ctx.service.runner.job_dir(job) / "log.jsonl"
    last_plot, last_n = 0.0, -1
    for st in watch(ctx.service, job, ctx.poll):
        done = st["status"] not in ("queued", "running")
        plot = gr.update()
        if done or time.time() - last_plot > PLOT_EVERY:
            pts = plots.read_log(log_file)
            if len(pts) != last_n or done:
                img = plots.loss_plot(pts, ctx.t("loss"))
                plot = img if img is not None else gr.update()
                last_n, last_plot = len(pts), time.time()
        samples = paths.entries(ctx.service.runner.job_dir(job) / "samples", [ctx.service.workspace], "*.png")
        pics = gr.update(value=[(str(p), p.stem) for p in samples], visible=True) if samples else gr.update()
        if done:
            msg = done_text(st, ctx.t)
            res = st.get("result") or {}
            if res.get("output"):
                msg += " " + ctx.t("Saved {file}.", file=res["output"])
            for w in res.get("warnings") or []:
                msg += f"\n\n⚠ {w}"
            yield [progress_html(st, ctx.t), plot, pics, outputs_text(ctx.service, project),
                   gr.update(choices=resumable(ctx.service, project), value=None), msg]
        else:
            yield [progress_html(st, ctx.t), plot, pics, gr.update(), gr.update(), ""]


def run(ctx: Ctx, project: Optional[str], *values):
    name = need_project(project)
    job = ctx.service.train(name, overrides(values))
    yield from follow(ctx, name, job)


def resume(ctx: Ctx, project: Optional[str], job_id: Optional[str]):
    from ..errors import UserError

    name = need_project(project)
    job_id = resume_id(job_id)
    if not job_id:
        raise UserError("no stopped run chosen", "pick one in the list (runs that saved a training state)")
    job = ctx.service.train(name, resume_job=job_id)
    yield from follow(ctx, name, job)


# --------------------------------------------------------------------------------------------- layout

def train_device(service) -> str:
    """The device a training job of this service runs on: the provider's, else CUDA when there is one."""
    dev = getattr(service.models, "device", None)
    if dev:
        return str(dev)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def optimizer_label(t, device: str) -> tuple[str, str]:
    """(the optimizer control's label, why AdamW8bit falls back to AdamW on ``device`` or ""). Where it falls
    back, the option says so (the recipe proposes AdamW8bit; the run would quietly use AdamW). The label, not
    the choices: gradio 3.41's Dropdown shows its choices' values as they are."""
    from ..training.optim import eightbit_fallback

    why = eightbit_fallback(device)
    label = t(C.field_label("optimizer"))
    if not why:
        return label, ""
    import torch

    return label + " · " + t("AdamW8bit falls back to AdamW on {device}", device=torch.device(device).type), why


def optimizer_update(ctx: Ctx):
    """The optimizer option's label and info on this device, for the page's load event: the AdamW8bit probe
    imports bitsandbytes and steps once (about a second, and bitsandbytes' own notice on the console), which
    must not happen while the WebUI starts (tests/test_scripts_entry.py); the probe is cached per device."""
    import gradio as gr

    label, why = optimizer_label(ctx.t, train_device(ctx.service))
    return gr.update(label=label, info=ctx.t("here AdamW8bit falls back to AdamW: {why}", why=why) if why else None)


def build(ctx: Ctx) -> dict:
    import gradio as gr

    t = ctx.t
    values = config_for(ctx.service, ctx.initial_project)
    with gr.Column(elem_id="lt-train"):
        gr.Markdown(t("Every option of the run, with the recipe's defaults. Hover an option for what it does."),
                    elem_classes=["lt-help"])
        if not ctx.can_train:
            gr.Markdown("⚠ " + t("Training is not possible on this host; see the notes above."),
                        elem_id="lt-train-blocked", elem_classes=["lt-note"])
        ctrls = C.grouped_controls(TrainConfig, t, ctx.tips, "lt-train", values,
                                   open_groups=("network", "training"), columns=4)
        with gr.Row():
            forecast = gr.Markdown("", elem_id="lt-train-forecast", elem_classes=["lt-forecast"])
            measure_btn = gr.Button(t("Measure"), scale=0, elem_id=ctx.tip(
                "lt-train-measure", "Time a few steps on the model for minutes and peak memory"))
        with gr.Row():
            run_btn = gr.Button(t("Train"), variant="primary", interactive=ctx.can_train,
                                elem_id=ctx.tip("lt-train-run", "Start training with these settings"))
            cancel_btn = gr.Button(t("Cancel"), elem_id=ctx.tip(
                "lt-train-cancel", "Stop within a step; what was trained so far is saved and can be resumed"))
            resume_dd = gr.Dropdown(choices=resumable(ctx.service, ctx.initial_project), value=None,
                                    label=t("Stopped run"), elem_id=ctx.tip(
                                        "lt-train-resume-job", "A cancelled or interrupted run to continue"))
            resume_btn = gr.Button(t("Resume"), interactive=ctx.can_train, elem_id=ctx.tip(
                "lt-train-resume", "Continue the chosen run from its last saved state"))
        progress = gr.HTML(progress_html(None), elem_id="lt-train-progress")
        msg = gr.Markdown("", elem_id="lt-train-msg", elem_classes=["lt-msg"])
        with gr.Row():
            loss = gr.Image(label=t("Loss"), type="pil", interactive=False, elem_id="lt-train-loss")
            samples = gr.Gallery(label=t("Samples"), columns=4, height="auto", visible=False,
                                 elem_id="lt-train-samples")
        files = gr.Markdown("", elem_id="lt-train-outputs")
    return {"controls": ctrls, "forecast": forecast, "measure": measure_btn, "run": run_btn, "cancel": cancel_btn,
            "resume_job": resume_dd, "resume": resume_btn, "progress": progress, "msg": msg, "loss": loss,
            "samples": samples, "outputs": files}


def control_list(parts: dict) -> list:
    return [parts["controls"][n] for n in NAMES]


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    t = ctx.t
    inputs = [ctx.project] + control_list(parts)
    outs = [parts["progress"], parts["loss"], parts["samples"], parts["outputs"], parts["resume_job"], parts["msg"]]
    parts["run_event"] = parts["run"].click(guard_gen(6, t)(lambda p, *v: run(ctx, p, *v)), inputs, outs)
    parts["resume"].click(guard_gen(6, t)(lambda p, j: resume(ctx, p, j)), [ctx.project, parts["resume_job"]], outs)
    wire_cancel(ctx, parts["cancel"], parts["msg"], KINDS + ("forecast",))
    fc = guard(2, t)(lambda p, *v: [forecast_text(ctx, p, *v), ""])
    for n in STEP_INPUTS:
        parts["controls"][n].change(fc, inputs, [parts["forecast"], parts["msg"]])
    parts["measure"].click(guard_gen(2, t)(lambda p, *v: measure(ctx, p, *v)), inputs, [parts["forecast"], parts["msg"]])
    # Preparing and tagging change what the forecast counts and warns about (images, captions): refresh it
    # when their runs end, so "N image(s) have no caption" does not outlive the tagging that wrote them.
    refresh = guard(1, t)(lambda p, *v: forecast_text(ctx, p, *v) if p else "")
    for key in ("prepare", "tag"):
        ev = (steps.get(key) or {}).get("run_event")
        if ev is not None:
            ev.then(refresh, inputs, [parts["forecast"]])


def on_project(ctx: Ctx, parts: dict):
    import gradio as gr

    def load(p):
        cfg = config_for(ctx.service, p)
        try:
            fc = forecast_text(ctx, p, *[C.to_display(TrainConfig, n, cfg[n]) for n in NAMES]) if p else ""
        except Exception:  # noqa: BLE001 - no dataset yet: the forecast box stays empty
            fc = ""
        return C.updates(TrainConfig, NAMES, cfg) + [
            fc, outputs_text(ctx.service, p) if p else "", gr.update(choices=resumable(ctx.service, p), value=None), ""]
    return control_list(parts) + [parts["forecast"], parts["outputs"], parts["resume_job"], parts["msg"]], load
