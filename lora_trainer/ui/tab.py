"""The LoRA Trainer tab: ``build_tab(service, host_info) -> gr.Blocks``.

One project bar on top (open or create a project; "do the rest with the recipe"), then the seven steps as
tabs, one module each (``step_images`` … ``step_test``). Every step only calls ``Service``; model work runs
as jobs on its one ``JobRunner``. The same Blocks is the WebUI tab (``scripts/`` returns it from
``on_ui_tabs``) and the standalone ``python -m lora_trainer ui`` page (``ui/standalone.py``).

Written for gradio 3.41 with only what 4.x also has (``gr.update``, constructor arguments, no ``.style``,
no ``gr.Box``). Every ``elem_id`` starts with ``lt-``; the tooltips of all options travel in a hidden
element that ``javascript/lora_trainer.js`` turns into ``title`` attributes.

``host_info`` keys read here (all optional): ``lang`` (the WebUI's localization name or ``zh_CN``),
``host`` (a short description: "WebUI 1.10.1", "standalone"), ``family`` (model family of the loaded
checkpoint), ``warnings`` (list of lines shown on top), ``disabled`` (feature → why it is off),
``can_train`` (False on a host that cannot train in place: Train and Estimate are then disabled).
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any, Optional

from . import disk_bar, recipe, step_edit, step_estimate, step_images, step_prepare, step_tag, step_test, step_train
from .common import Ctx, guard
from .i18n import Translator

log = logging.getLogger("lora_trainer.ui")

STEPS = [("images", "1 · Images", step_images), ("prepare", "2 · Crop & background", step_prepare),
         ("tag", "3 · Auto-tag", step_tag), ("edit", "4 · Edit tags", step_edit),
         ("estimate", "5 · Estimate LR", step_estimate), ("train", "6 · Train", step_train),
         ("test", "7 · Test", step_test)]


def project_names(service) -> list[str]:
    return [p["name"] for p in service.projects()]


def project_summary(service, t, name: Optional[str]) -> str:
    if not name:
        return t("No project open: create one to start.")
    info = service.project_info(name)
    return t("**{name}** · trigger `{trigger}` · {src} source images · {ds} prepared · {out} LoRA file(s) · "
             "dataset folder `{folder}`", name=name, trigger=info.get("trigger") or "—",
             src=info.get("source_images", 0), ds=info.get("dataset_images", 0), out=len(info.get("outputs", [])),
             folder=info.get("dataset_dir", ""))


def host_line(t, host: dict) -> str:
    bits = [str(host[k]) for k in ("host", "family") if host.get(k)]
    lines = [" · ".join(bits)] if bits else []
    lines += [f"⚠ {w}" for w in host.get("warnings") or []]
    disabled = host.get("disabled") or host.get("disabled_features") or {}
    lines += [f"⚠ {t('Off in this install')}: {k} — {v}" for k, v in disabled.items()]
    return "\n\n".join(lines)


def tooltips_html(tips: dict) -> str:
    """The hidden element the tab's script reads: ``{elem_id: tooltip}`` as JSON in a data attribute."""
    data = html.escape(json.dumps(tips, ensure_ascii=False), quote=True)
    return f'<div id="lt-tooltip-data" data-tips="{data}"></div>'


def create_project(service, t, name: str, trigger: str, repeats) -> list:
    """[project dropdown, new-name box, message]."""
    import gradio as gr

    info = service.create_project((name or "").strip(), trigger=(trigger or "").strip(), repeats=int(repeats or 30))
    return [gr.update(choices=project_names(service), value=info["name"]), "",
            t("Created project {name}.", name=info["name"])]


def build_tab(service, host_info: Optional[dict] = None):
    """Build the tab's Blocks (not launched). ``service``: a ``lora_trainer.service.Service``."""
    import gradio as gr

    host = dict(host_info or {})
    t = Translator(host.get("lang"))
    names = project_names(service)
    initial = host.get("project") if host.get("project") in names else (names[0] if names else None)
    ctx = Ctx(service=service, host=host, t=t, initial_project=initial)
    steps: dict[str, dict] = {}
    with gr.Blocks(analytics_enabled=False, title="LoRA Trainer") as blocks:
        with gr.Column(elem_id="lt-root"):
            with gr.Row(elem_id="lt-project-bar"):
                ctx.project = gr.Dropdown(choices=names, value=initial, label=t("Project"), scale=3,
                                          elem_id=ctx.tip("lt-project", "The LoRA project every step works on"))
                refresh = gr.Button("↻", scale=0, min_width=48,
                                    elem_id=ctx.tip("lt-project-refresh", "Reload the list of projects"))
                with gr.Column(scale=5):
                    summary = ctx.summary = gr.Markdown(project_summary(service, t, initial),
                                                        elem_id="lt-project-summary")
            disk = disk_bar.build(ctx)
            with gr.Accordion(t("New project"), open=not names, elem_id="lt-project-new"):
                with gr.Row():
                    new_name = gr.Textbox(label=t("Name"), placeholder="my_lora", elem_id=ctx.tip(
                        "lt-project-name", "Folder name of the project: ASCII letters, digits, . _ -"))
                    new_trigger = gr.Textbox(label=t("Trigger word"), elem_id=ctx.tip(
                        "lt-project-trigger", "The word that will call your subject in prompts, e.g. zkw"))
                    new_repeats = gr.Number(value=int((service.models.preset() or {}).get("repeats", 30)), precision=0,
                                            minimum=1, label=t("Repeats"), elem_id=ctx.tip(
                                                "lt-project-repeats", "Repeats per image per epoch (the dataset "
                                                                      "folder's N_ prefix)"))
                    create_btn = gr.Button(t("Create project"), variant="primary",
                                           elem_id=ctx.tip("lt-project-create", "Create the project and open it"))
            host_md = host_line(t, host)
            if host_md:
                gr.Markdown(host_md, elem_id="lt-host-info", elem_classes=["lt-note"])
            msg = gr.Markdown("", elem_id="lt-project-msg", elem_classes=["lt-msg"])
            rec = recipe.build(ctx)
            with gr.Tabs(elem_id="lt-steps"):
                for key, title, mod in STEPS:
                    with gr.Tab(t(title), id=key, elem_id=f"lt-step-{key}"):
                        steps[key] = mod.build(ctx)
            gr.HTML(tooltips_html(ctx.tips), elem_id="lt-tooltips", elem_classes=["lt-hidden"])

        for key, _title, mod in STEPS:
            mod.wire(ctx, steps[key], steps)
        recipe.wire(ctx, rec, steps)
        _wire_projects(ctx, blocks, steps, summary, msg, refresh, new_name, new_trigger, new_repeats, create_btn)
        _wire_disk(ctx, steps, disk, msg)
        blocks.load(guard(1, t)(lambda: step_train.optimizer_update(ctx)), None,
                    [steps["train"]["controls"]["optimizer"]])
    keep_out_of_ui_config(blocks)
    blocks.lora_trainer_parts = {"ctx": ctx, "steps": steps, "recipe": rec, "summary": summary, "msg": msg,
                                 "create": create_btn, "new_name": new_name, "new_trigger": new_trigger,
                                 "new_repeats": new_repeats, "refresh": refresh, "disk": disk}
    return blocks


def shown_project(ctx: Ctx, in_page: Optional[str]) -> Optional[str]:
    """The project a freshly loaded page opens: the one this tab last opened, else the page's own, else the
    first. (The page's built-in value is what the tab was built with, or what the WebUI's ui-config.json
    put there, so it cannot be trusted to be the project the person was working on.)"""
    names = project_names(ctx.service)
    for p in (ctx.last_project, in_page):
        if p in names:
            return p
    return names[0] if names else None


def keep_out_of_ui_config(blocks) -> None:
    """The WebUI stores every labelled control's value in ui-config.json at its first start and puts it back
    on each later start (``ui_loadsave``), over the values the tab was built with: a project's settings and
    the project itself would come back as they were on the first day. ``do_not_save_to_config`` is the
    WebUI's own opt-out; the page's load event fills the controls from the project instead."""
    for block in blocks.blocks.values():
        block.do_not_save_to_config = True


def _wire_projects(ctx: Ctx, blocks, steps: dict, summary, msg, refresh, new_name, new_trigger, new_repeats,
                   create_btn):
    import gradio as gr

    svc, t = ctx.service, ctx.t
    create_btn.click(guard(3, t)(lambda n, tr, r: create_project(svc, t, n, tr, r)),
                     [new_name, new_trigger, new_repeats], [ctx.project, new_name, msg])
    # ↻ keeps the page's project when it still exists; an empty or stale one becomes the project the page load
    # opens (shown_project). The WebUI's script clicks ↻ when its UI is up, the same moment as the load event:
    # with the page's value taken as it was, a page built before any project existed showed an empty dropdown
    # while the load event had opened a project, and every step then said "no project is open".
    def refresh_projects(p):
        names = project_names(svc)  # the workspace listed once (shown_project lists again only for a stale p)
        return [gr.update(choices=names, value=p if p in names else shown_project(ctx, p)), ""]

    refresh.click(guard(2, t)(refresh_projects), [ctx.project], [ctx.project, msg])
    # Every step shows the project in the dropdown. One callback fills them all: on a change of the
    # dropdown and when a page loads (a reload keeps no state; what it shows is rebuilt from the project).
    loaders = [(outs, guard(len(outs), t)(fn)) for outs, fn in (mod.on_project(ctx, steps[key])
                                                                for key, _title, mod in STEPS)]
    outputs = [summary, msg] + [o for outs, _fn in loaders for o in outs]

    def open_project(p):
        if p:
            ctx.last_project = p
        out = [project_summary(svc, t, p), ""]
        for outs, fn in loaders:
            res = fn(p)
            out += list(res) if len(outs) > 1 else [res]
        return out

    def on_load(in_page):
        p = shown_project(ctx, in_page)
        return [gr.update(choices=project_names(svc), value=p)] + open_project(p)

    edit = steps["edit"]
    ctx.project.change(guard(len(outputs), t)(open_project), [ctx.project], outputs).then(
        edit["load_fn"], edit["load_inputs"], edit["view"])
    blocks.load(guard(len(outputs) + 1, t)(on_load), [ctx.project], [ctx.project] + outputs).then(
        edit["load_fn"], edit["load_inputs"], edit["view"])
    # Work done in a step changes the project's counts: refresh the summary after each run (the Images
    # step's add and remove write it themselves, in the same event).
    for key in ("images", "prepare", "tag", "train"):
        ev_run = steps[key].get("run_event")
        if ev_run is not None:
            ev_run.then(lambda p: project_summary(svc, t, p) if p else "", [ctx.project], [summary])


def _wire_disk(ctx: Ctx, steps: dict, disk: dict, msg) -> None:
    """The Disk line follows the open project and every step that writes files."""
    disk_bar.wire(ctx, disk, msg)
    outs, fn = disk_bar.refresh(ctx, disk)
    fn = guard(1, ctx.t)(fn)
    ctx.project.change(fn, [ctx.project], outs)
    for key in ("images", "prepare", "train", "test"):
        ev = steps[key].get("run_event")
        if ev is not None:
            ev.then(fn, [ctx.project], outs)


def parts_of(blocks) -> dict[str, Any]:
    """The components and context ``build_tab`` made (for the standalone page and tests)."""
    return getattr(blocks, "lora_trainer_parts", {})
