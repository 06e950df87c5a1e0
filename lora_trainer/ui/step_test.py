"""Step 7 · Test: images with a chosen LoRA file (the final one or an intermediate save) through
``Service.generate``, and the epoch × weight grid that compares the saves.

Each grid cell row is one LoRA file and each column one weight; every (file, weight) pair is one generate
job on the runner (the first seed only), so a long grid shows progress cell by cell and Cancel stops it
between cells. In the WebUI the generator is the host's txt2img (the adapter's ``ModelProvider``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UserError
from . import plots
from .common import EN, Ctx, done_text, guard, guard_gen, need_project, progress_html, stop_sequence, watch

KINDS = ("generate",)
NO_LORA = "(none: the base model)"
GRID_WEIGHTS = "0.5, 1.0"


def lora_files(service, project: Optional[str]) -> list[str]:
    """The project's LoRA files, final ones first, then the intermediate saves in training order."""
    if not project:
        return []
    names = [f["name"] for f in service.outputs(project)]
    finals = [n for n in names if not _is_intermediate(n)]
    return finals + sorted(n for n in names if _is_intermediate(n))


def _is_intermediate(name: str) -> bool:
    stem = name.rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    return "-" in stem and (tail.isdigit() or (tail.startswith("step") and tail[4:].isdigit()))


def grid_order(files: list[str]) -> list[str]:
    """Rows in training order: the intermediate saves by step, the final file(s) last."""
    return sorted((f for f in files if _is_intermediate(f)), key=_save_index) + [f for f in files
                                                                              if not _is_intermediate(f)]


def _save_index(name: str) -> int:
    tail = name.rsplit(".", 1)[0].rsplit("-", 1)[-1]
    return int(tail[4:] if tail.startswith("step") else tail)


def parse_numbers(text: str, kind=float, what: str = "value") -> list:
    try:
        vals = [kind(x) for x in str(text or "").replace(";", ",").replace(" ", ",").split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{what}: {text!r} is not a list of numbers", "write them separated by commas, e.g. 1, 2, 3") \
            from None
    if not vals:
        raise UserError(f"no {what} given", "write at least one, e.g. 1")
    return vals


def default_prompt(service, project: Optional[str]) -> str:
    if not project:
        return ""
    return service.project_info(project).get("trigger") or project


def _images(service, job: str, st: dict) -> list[str]:
    folder = service.runner.job_dir(job)
    return [str(folder / f) for f in (st.get("result") or {}).get("images", [])]


def infotext_block(images: list[str], t=EN) -> str:
    """The first image's infotext (the WebUI writes it: prompt, seed, sampler, ``Lora hashes``), as a
    Markdown block under the message; empty standalone, where images carry none."""
    from PIL import Image

    if not images:
        return ""
    with Image.open(images[0]) as im:
        text = im.info.get("parameters") or ""
    return f"\n\n{t('Infotext of the first image:')}\n```\n{text}\n```" if text else ""


def _sampling(service, steps, cfg_scale) -> dict:
    """Steps and CFG as typed; an emptied field falls back to the model's default, not a fixed 20/7."""
    d = service.sampling()
    return {"steps": int(steps or d["steps"]), "cfg_scale": float(cfg_scale or d["cfg_scale"])}


def publish(ctx: Ctx, project, lora) -> str:
    """The chosen file into the WebUI's Lora folder under a unique name; what to type in txt2img."""
    name = need_project(project)
    if not lora or lora == NO_LORA:
        raise UserError("choose a LoRA file first", "pick the final file or an intermediate save above")
    target = ctx.service.publish_output(name, lora)
    return ctx.t("Copied to {path}: use it in txt2img as `<lora:{name}:1>`.", path=str(target), name=target.stem)


def generate(ctx: Ctx, project, prompt, negative, seeds, weight, steps, cfg_scale, size, sampler, lora):
    """Generator: [progress, gallery, message]."""
    import gradio as gr

    name = need_project(project)
    seed_list = parse_numbers(seeds, int, "seeds")
    job = ctx.service.generate(name, [prompt or default_prompt(ctx.service, name)], negative=negative or "",
                               lora=None if not lora or lora == NO_LORA else lora, weight=float(weight or 0),
                               seeds=tuple(seed_list), **_sampling(ctx.service, steps, cfg_scale),
                               size=int(size or 0), sampler=sampler or None)
    for st in watch(ctx.service, job, ctx.poll):
        if st["status"] == "finished":
            label = f"{lora or NO_LORA} @ {weight}"
            images = _images(ctx.service, job, st)
            yield [progress_html(st, ctx.t), [(p, f"{label} · seed {s}") for p, s in zip(images, seed_list)],
                   done_text(st, ctx.t) + infotext_block(images, ctx.t)]
        elif st["status"] in ("queued", "running"):
            yield [progress_html(st, ctx.t), gr.update(), ""]
        else:
            yield [progress_html(st, ctx.t), gr.update(), done_text(st, ctx.t)]


def grid(ctx: Ctx, project, prompt, negative, seeds, steps, cfg_scale, size, sampler, files, weights):
    """Generator: [progress, grid image, message]. Rows: files; columns: weights."""
    import gradio as gr

    name = need_project(project)
    files = grid_order([f for f in (files or []) if f])
    if not files:
        raise UserError("no LoRA files ticked for the grid", "tick the saves to compare (train first)")
    ws = parse_numbers(weights, float, "weights")
    seed = parse_numbers(seeds, int, "seeds")[0]
    ctx.stops.discard((name, "grid"))
    cells = [[None] * len(ws) for _ in files]
    total = len(files) * len(ws)
    for i, f in enumerate(files):
        for j, w in enumerate(ws):
            job = ctx.service.generate(name, [prompt or default_prompt(ctx.service, name)], negative=negative or "",
                                       lora=None if f == NO_LORA else f, weight=w, seeds=(seed,),
                                       **_sampling(ctx.service, steps, cfg_scale), size=int(size or 0),
                                       sampler=sampler or None)
            for st in watch(ctx.service, job, ctx.poll):
                shown = dict(st, progress={"phase": ctx.t("grid cell"), "step": i * len(ws) + j + 1, "total": total})
                if st["status"] in ("queued", "running"):
                    yield [progress_html(shown, ctx.t), gr.update(), ""]
            if st["status"] != "finished" or (name, "grid") in ctx.stops:
                ctx.stops.discard((name, "grid"))
                yield [progress_html(st, ctx.t), gr.update(), done_text(dict(st, status="cancelled")
                                                                        if st["status"] == "finished" else st, ctx.t)]
                return
            cells[i][j] = _images(ctx.service, job, st)[0]
            yield [progress_html(shown, ctx.t), gr.update(), ""]
    img = plots.compose_grid(cells, [Path(f).stem for f in files], [f"weight {w:g}" for w in ws])
    yield [progress_html({"status": "finished", "progress": {"step": total, "total": total}}, ctx.t), img,
           ctx.t("Grid of {n} images.", n=total)]


def time_text(ctx: Ctx, project, seeds, steps, size, files, weights) -> str:
    """Before starting: how long Generate and Build grid will take (``proposals.test_time_text``)."""
    from .proposals import test_time_text

    if not project:
        return ""
    try:
        n = len(parse_numbers(seeds, int, "seeds"))
        cells = len([f for f in files or [] if f]) * len(parse_numbers(weights, float, "weights"))
    except UserError:
        return ""
    size = int(size or 0) or int((ctx.service.models.preset() or {}).get("resolution", 512))
    lines = [ctx.t("Generate") + ": " + test_time_text(ctx.service, ctx.t, project, n, int(steps or 0), size)]
    if cells:
        lines.append(ctx.t("Grid") + ": " + test_time_text(ctx.service, ctx.t, project, cells, int(steps or 0), size))
    return "\n\n".join(lines)


def build(ctx: Ctx) -> dict:
    import gradio as gr

    from .proposals import proposed

    t = ctx.t
    files = lora_files(ctx.service, ctx.initial_project)
    test = proposed(ctx.service)["test"]  # smaller on a CPU (config.device_defaults)
    sampling = ctx.service.sampling()  # the model's own: the toy model draws at CFG 3, an SD model at 7
    tip = ctx.tip
    with gr.Column(elem_id="lt-test"):
        gr.Markdown(t("Draw images with the LoRA to see what it learned; compare the intermediate saves in the "
                      "grid to pick the best one."), elem_classes=["lt-help"])
        with gr.Row():
            prompt = gr.Textbox(label=t("Prompt"), value=default_prompt(ctx.service, ctx.initial_project), scale=3,
                                elem_id=tip("lt-test-prompt", "What to draw; include the trigger word"))
            negative = gr.Textbox(label=t("Negative prompt"), scale=2,
                                  elem_id=tip("lt-test-negative", "What to keep out of the image"))
        with gr.Row():
            lora = gr.Dropdown(choices=[NO_LORA] + files, value=files[0] if files else NO_LORA, label=t("LoRA file"),
                               elem_id=tip("lt-test-lora", "The final file or an intermediate save"))
            weight = gr.Number(value=1.0, label=t("Weight"), minimum=-2, maximum=2,
                               elem_id=tip("lt-test-weight", "How strongly the LoRA is applied (1 = as trained)"))
            seeds = gr.Textbox(value=", ".join(str(x) for x in test["seeds"]), label=t("Seeds"),
                               elem_id=tip("lt-test-seeds", "One image per seed, comma-separated"))
            steps = gr.Number(value=min(int(sampling["steps"]), int(test["steps"])), precision=0, minimum=1,
                              maximum=150, label=t("Sampling steps"),
                              elem_id=tip("lt-test-steps", "Denoising steps per image"))
            cfg = gr.Number(value=float(sampling["cfg_scale"]), minimum=1, maximum=30, label=t("CFG scale"),
                            elem_id=tip("lt-test-cfg", "How closely the image follows the prompt"))
            size = gr.Number(value=int(test["size"]), precision=0, minimum=0, maximum=2048,
                             label=t("Size"), elem_id=tip("lt-test-size", "Image side in pixels (0 = the training resolution)"))
            samplers = ctx.service.samplers()
            sampler = gr.Dropdown(choices=samplers, value=sampling["sampler"] or (samplers[0] if samplers else None),
                                  label=t("Sampler"),
                                  elem_id=tip("lt-test-sampler", "How the image is denoised (the WebUI's samplers "
                                              "in the WebUI)"))
        with gr.Row():
            gen_btn = gr.Button(t("Generate"), variant="primary",
                                elem_id=tip("lt-test-run", "Draw one image per seed with the chosen file"))
            cancel_btn = gr.Button(t("Cancel"), elem_id=tip("lt-test-cancel", "Stop generating"))
            refresh_btn = gr.Button(t("Refresh files"), elem_id=tip("lt-test-refresh", "Reload the list of LoRA files"))
            publish_btn = gr.Button(t("Use in the WebUI"), elem_id=tip(
                "lt-test-publish", "Copy the chosen file into the WebUI's Lora folder under a unique name"))
        eta = gr.Markdown(time_text(ctx, ctx.initial_project, seeds.value, steps.value, size.value, files,
                                    GRID_WEIGHTS), elem_id="lt-test-time", elem_classes=["lt-forecast"])
        progress = gr.HTML(progress_html(None), elem_id="lt-test-progress")
        msg = gr.Markdown("", elem_id="lt-test-msg", elem_classes=["lt-msg"])
        pics = gr.Gallery(label=t("Images"), columns=4, height="auto", elem_id="lt-test-gallery")
        with gr.Accordion(t("Epoch × weight grid"), open=True, elem_id="lt-test-grid-box"):
            with gr.Row():
                grid_files = gr.CheckboxGroup(choices=files, value=files, label=t("Files (rows)"), scale=3,
                                              elem_id=tip("lt-test-grid-files", "The saves to compare, one row each"))
                grid_weights = gr.Textbox(value=GRID_WEIGHTS, label=t("Weights (columns)"), scale=1,
                                          elem_id=tip("lt-test-grid-weights", "Weights to compare, comma-separated"))
                grid_btn = gr.Button(t("Build grid"), scale=0,
                                     elem_id=tip("lt-test-grid-run", "One image per file and weight, with the first seed"))
            grid_img = gr.Image(label=t("Grid"), type="pil", interactive=False, height=420, elem_id="lt-test-grid")
    return {"prompt": prompt, "negative": negative, "lora": lora, "weight": weight, "seeds": seeds, "steps": steps,
            "cfg": cfg, "size": size, "sampler": sampler, "run": gen_btn, "cancel": cancel_btn, "refresh": refresh_btn,
            "publish": publish_btn, "time": eta,
            "progress": progress, "msg": msg, "gallery": pics, "grid_files": grid_files,
            "grid_weights": grid_weights, "grid_run": grid_btn, "grid": grid_img}


def file_updates(service, project: Optional[str]) -> list:
    import gradio as gr

    files = lora_files(service, project)
    return [gr.update(choices=[NO_LORA] + files, value=files[0] if files else NO_LORA),
            gr.update(choices=files, value=files)]


def wire(ctx: Ctx, parts: dict, steps: dict) -> None:
    t = ctx.t
    base = [ctx.project, parts["prompt"], parts["negative"], parts["seeds"]]
    parts["run"].click(guard_gen(3, t)(lambda *a: generate(ctx, *a)),
                       base + [parts["weight"], parts["steps"], parts["cfg"], parts["size"], parts["sampler"],
                               parts["lora"]],
                       [parts["progress"], parts["gallery"], parts["msg"]])
    parts["grid_run"].click(guard_gen(3, t)(lambda *a: grid(ctx, *a)),
                            base + [parts["steps"], parts["cfg"], parts["size"], parts["sampler"], parts["grid_files"],
                                    parts["grid_weights"]], [parts["progress"], parts["grid"], parts["msg"]])
    parts["cancel"].click(guard(1, t)(lambda p: stop_sequence(ctx, p, "grid", KINDS)), [ctx.project], [parts["msg"]],
                          queue=False)
    parts["publish"].click(guard(1, t)(lambda p, f: publish(ctx, p, f)), [ctx.project, parts["lora"]], [parts["msg"]])
    parts["refresh"].click(guard(3, t)(lambda p: file_updates(ctx.service, p) + [""]), [ctx.project],
                           [parts["lora"], parts["grid_files"], parts["msg"]])
    timed = [ctx.project, parts["seeds"], parts["steps"], parts["size"], parts["grid_files"], parts["grid_weights"]]
    for comp in timed[1:]:
        comp.change(guard(1, t)(lambda *a: time_text(ctx, *a)), timed, [parts["time"]])
    train = steps.get("train") or {}
    if "run_event" in train:  # a finished run's files appear here without a refresh
        train["run_event"].then(lambda p: file_updates(ctx.service, p), [ctx.project],
                                [parts["lora"], parts["grid_files"]])


def on_project(ctx: Ctx, parts: dict):
    def load(p):
        return file_updates(ctx.service, p) + [default_prompt(ctx.service, p), ""]
    return [parts["lora"], parts["grid_files"], parts["prompt"], parts["msg"]], load
