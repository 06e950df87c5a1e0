"""Click through the seven steps of the standalone ``ui`` in headless Chromium and screenshot each step.

    python tests/e2e_tab.py --url http://127.0.0.1:7861/ --out DIR [--images DIR]
    python tests/e2e_tab.py --serve --out docs/images        # starts `python -m lora_trainer ui` itself
    python tests/e2e_tab.py --webui --out DIR                # the tab in the WebUI double's page instead

Driven by playwright (pip ``playwright``, no browser download) with Debian's ``/usr/bin/chromium``. Each
step is done as a person would: create a project, upload toy-world pictures, crop, auto-tag, delete a tag
and save, run the LR probe and cancel it after a few steps, "Use these", train a few steps, generate and
build the epoch × weight grid. Screenshots: ``OUT/tab-1-images.png`` … ``OUT/tab-7-test.png``.
Exits non-zero (with the step that failed) when anything does not show up in time.

Around the seven steps: a project ``aaa`` exists before the page is built (so the page's own value is not
the project worked on); after training the page is reloaded and must show the project worked on with its
settings, and the Test step's job must land in that project; at the end every option of every dropdown,
radio and checkbox group is chosen once (``every_choice``: the components come from the served Blocks'
config, and one without an entry in ``CASES`` fails the run). ``--webui`` serves the tab inside a page built
as WebUI 1.10.1 builds it (``tests/webui_page.py``: the double, ``on_ui_tabs``, ui-config.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ["tab-1-images.png", "tab-2-prepare.png", "tab-3-tag.png", "tab-4-edit.png", "tab-5-estimate.png",
         "tab-6-train.png", "tab-7-test.png"]
JOB_TIMEOUT = int(os.environ.get("LT_E2E_JOB_TIMEOUT_MS", "300000"))  # ms: a step's job on the shared CI machine


def toy_images(folder: Path, n: int = 6) -> list[Path]:
    """Toy-world scenes as the user's photos (the concept the toy model can learn)."""
    import numpy as np

    from lora_trainer.toy.world import render, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        p = folder / f"photo{i}.png"
        render(sample_scene(rng)).save(p)
        out.append(p)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(workspace: Path, port: int, log_file: Path, webui: bool = False) -> subprocess.Popen:
    """``python -m lora_trainer ui`` (or, with ``webui``, ``tests/webui_page.py`` with ``workspace`` as the
    WebUI's data folder) on 127.0.0.1:port; returns once the page answers."""
    import urllib.request

    here = Path(__file__).resolve().parent
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=str(here.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if webui:
        cmd = [sys.executable, str(here / "webui_page.py"), "--root", str(workspace), "--port", str(port),
               "--project", FIRST_PROJECT]
    else:
        first_project(workspace)
        cmd = [sys.executable, "-m", "lora_trainer", "ui", "--workspace", str(workspace), "--port", str(port),
               "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=open(log_file, "w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ui exited with {proc.returncode}: {log_file.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("ui did not answer within 180 s")


FIRST_PROJECT = "aaa"   # there before the page is built: the page's own value of the project dropdown


def first_project(workspace: Path) -> None:
    from lora_trainer.service import Service

    svc = Service(workspace)
    try:
        svc.create_project(FIRST_PROJECT, trigger="aaa", repeats=1)
    finally:
        svc.runner.shutdown()


def job_projects(workspace: Path, kind: str) -> list[str]:
    """The projects of ``kind`` jobs in the workspace, oldest first (from each job's state.json)."""
    out = []
    for st in workspace.glob("*/jobs/*/state.json"):
        data = json.loads(st.read_text(encoding="utf-8"))
        if data.get("kind") == kind:
            out.append((data.get("created") or st.stat().st_mtime, data.get("config", {}).get("project")))
    return [p for _t, p in sorted(out, key=lambda x: float(x[0]))]


class Driver:
    """Small helpers over a playwright page for gradio 3.41's markup."""

    def __init__(self, page, out: Path):
        self.page, self.out = page, out
        self.seconds: dict = {"start": time.time()}   # when each step was first opened
        self.completed = [0]                           # the queue's process_completed messages seen
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        if "process_completed" in str(payload):
            self.completed[0] += 1

    def fill(self, elem_id: str, value) -> None:
        box = self.page.locator(f"#{elem_id} textarea, #{elem_id} input[type=number], #{elem_id} input[type=text]")
        box.first.fill(str(value))
        box.first.press("Tab")

    def click(self, elem_id: str) -> None:
        el = self.page.locator(f"#{elem_id}")
        if el.evaluate("e => e.tagName.toLowerCase()") != "button":
            el = el.locator("button").first
        el.click()

    def expand(self, elem_id: str) -> None:
        """Open a closed accordion (its first child is the clickable header)."""
        box = self.page.locator(f"#{elem_id}")
        if not box.locator("textarea, input, button").first.is_visible():
            box.locator(".label-wrap").first.click()
            self.page.wait_for_timeout(300)

    def tab(self, title_start: str) -> None:
        self.seconds.setdefault(title_start, time.time())
        self.page.locator("#lt-steps button", has_text=re.compile("^\\s*" + re.escape(title_start))).first.click()
        self.page.wait_for_timeout(300)

    def wait_status(self, elem_id: str, statuses=("finished",), timeout: int = JOB_TIMEOUT) -> str:
        sel = ", ".join(f"#{elem_id} [data-status={s}]" for s in statuses)
        self.page.wait_for_selector(sel, timeout=timeout)
        return self.page.locator(f"#{elem_id} [data-status]").first.get_attribute("data-status")

    def wait_images(self, elem_id: str, n: int = 1, timeout: int = JOB_TIMEOUT) -> int:
        self.page.wait_for_function(
            "([id, n]) => document.querySelectorAll('#' + id + ' img').length >= n", arg=[elem_id, n],
            timeout=timeout)
        return self.page.locator(f"#{elem_id} img").count()

    def text(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id}").first.inner_text()

    def shot(self, name: str) -> Path:
        self.page.wait_for_timeout(400)
        path = self.out / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


def click_through(url: str, out: Path, images: list[Path], headless: bool = True,
                  workspace: Optional[Path] = None, webui: bool = False) -> dict:
    """The seven steps; returns what was seen (for the test's assertions). ``workspace``: where the served
    page keeps its projects (to check which project a job went to); ``webui``: the page is the WebUI's."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    seen: dict = {"screenshots": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=headless, args=FLAGS[1:])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        if os.environ.get("LT_E2E_DEBUG"):
            page.on("request", lambda r: print("REQ", r.method, r.url, file=sys.stderr))
            page.on("requestfinished", lambda r: print("FIN", r.url, file=sys.stderr))
            page.on("requestfailed", lambda r: print("FAIL", r.url, r.failure, file=sys.stderr))
            page.on("console", lambda m: print("CONSOLE", m.text, file=sys.stderr))
            page.on("websocket", lambda ws: (print("WS", ws.url, file=sys.stderr),
                                             ws.on("framereceived", lambda f: print("WS<", str(f)[:150], file=sys.stderr)),
                                             ws.on("framesent", lambda f: print("WS>", str(f)[:150], file=sys.stderr))))
        d = Driver(page, out)
        try:
            _steps(page, d, seen, images, url, workspace, webui)
        except Exception:
            page.screenshot(path=str(out / "failure.png"), full_page=True)
            raise
        finally:
            seen["page_errors"] = errors
            t0 = d.seconds.pop("start")
            seen["seconds"] = {k: round(v - t0, 1) for k, v in d.seconds.items()} | {"end": round(time.time() - t0, 1)}
            browser.close()
    seen["screenshots"] = [str(s) for s in seen["screenshots"]]
    return seen


def open_page(page, url: str, webui: bool) -> None:
    page.goto(url)
    if webui:  # the WebUI opens on txt2img: the tab's button is in its #tabs bar
        page.locator("#tabs button", has_text="LoRA Trainer").first.click()
    page.wait_for_selector("#lt-root", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#lt-project') && "
                           "document.querySelector('#lt-project').getAttribute('title')", timeout=30_000)


def reload_and_check(page, d: "Driver", seen: dict, url: str, workspace: Optional[Path], webui: bool) -> None:
    """Mid-flow reload: the page must come back on the project worked on, with the settings it trained with."""
    page.reload()
    if webui:
        page.locator("#tabs button", has_text="LoRA Trainer").first.click()
    page.wait_for_selector("#lt-root", timeout=60_000)
    try:  # the load event fills the page from the project: wait for it to settle
        page.wait_for_function("() => document.querySelector('#lt-project input').value === 'e2e' && "
                               "document.querySelector('#lt-train-max-steps input').value === '4'", timeout=30_000)
    except Exception:  # noqa: BLE001 - what the page shows is reported and judged by the test
        pass
    seen["reload"] = {"project": page.locator("#lt-project input").input_value(),
                      "summary": d.text("lt-project-summary"),
                      "max_steps": page.locator("#lt-train-max-steps input").input_value(),
                      "sync_every": page.locator("#lt-train-sync-every input").input_value(),
                      "tag_trigger": page.locator("#lt-tag-trigger textarea, #lt-tag-trigger input").first
                      .input_value()}


def estimate_step(page, d: "Driver", seen: dict) -> None:
    d.tab("5")
    d.click("lt-estimate-run")
    # cancel once the probe has taken a few optimizer steps (d·lr is reported from the first one on)
    page.wait_for_function("() => { const t = document.querySelector('#lt-estimate-progress').innerText; "
                           "const m = t.match(/(\\d+)\\/\\d+/); return /d·lr/.test(t) && m && +m[1] >= 3; }",
                           timeout=JOB_TIMEOUT)
    d.click("lt-estimate-cancel")
    d.wait_status("lt-estimate-progress", ("cancelled", "finished"))
    d.wait_images("lt-estimate-plot", 1)
    d.click("lt-estimate-use")
    page.wait_for_function("() => /Train step now uses/.test(document.querySelector('#lt-estimate-msg').innerText)",
                           timeout=30_000)
    seen["estimate"] = d.text("lt-estimate-summary")
    seen["screenshots"].append(d.shot(SHOTS[4]))


def webui_reload_and_choices(page, d: "Driver", seen: dict, url: str, workspace: Optional[Path]) -> None:
    """The WebUI page's run after step 4: reload, then a Tag run must land in the project in view."""
    d.seconds["reload"] = time.time()
    reload_and_check(page, d, seen, url, workspace, True)
    d.tab("3")
    _choose_dropdown(page, "lt-tag-tagger", "toy")
    d.click("lt-tag-run")
    d.wait_status("lt-tag-progress")
    if workspace is not None:
        seen["tag_projects"] = job_projects(workspace, "tag")
    d.seconds["choices"] = time.time()
    seen["choices"] = every_choice(page, d, url, workspace)


def _steps(page, d: Driver, seen: dict, images: list[Path], url: str, workspace: Optional[Path] = None,
           webui: bool = False) -> None:
    if True:
        open_page(page, url, webui)
        if os.environ.get("LT_E2E_ONLY_CHOICES"):  # for working on every_choice: the options alone
            seen["choices"] = every_choice(page, d, url, workspace)
            return
        seen["tooltip"] = page.get_attribute("#lt-train-rank", "title")

        # ---- 1 · Images: a new project, pictures uploaded
        d.expand("lt-project-new")   # closed: a project (aaa) is already there
        d.fill("lt-project-name", "e2e")
        d.fill("lt-project-trigger", "zkw")
        d.click("lt-project-create")
        page.wait_for_function("() => document.querySelector('#lt-project-summary').innerText.includes('e2e')",
                               timeout=30_000)
        # Opening a project refreshes every step; the editor's reload is the last of those events. An upload
        # started while they land is dropped by gradio 3.41's File component (it stays "Uploading..."), so
        # wait for them, and pick the files again if it happens all the same.
        page.wait_for_function("() => !/^Load a folder/.test(document.querySelector('#lt-tags-status').innerText)",
                               timeout=60_000)
        page.wait_for_timeout(1000)
        for attempt in range(3):
            page.locator("#lt-images-upload input[type=file]").set_input_files([str(f) for f in images])
            try:
                page.wait_for_function("names => { const t = document.querySelector('#lt-images-upload').innerText;"
                                       " return names.every(n => t.includes(n)) && !/Uploading/.test(t); }",
                                       arg=[f.name for f in images], timeout=20_000)
                break
            except Exception:
                if attempt == 2:
                    raise
                page.locator("#lt-images-upload button[aria-label=Clear], #lt-images-upload button").first.click()
        page.wait_for_timeout(500)
        d.click("lt-images-add")
        seen["images"] = d.wait_images("lt-images-gallery", len(images), timeout=60_000)
        seen["screenshots"].append(d.shot(SHOTS[0]))

        # ---- 2 · Crop & background
        d.tab("2")
        d.click("lt-prepare-run")
        d.wait_status("lt-prepare-progress")
        seen["previews"] = d.wait_images("lt-prepare-gallery", 2)
        seen["screenshots"].append(d.shot(SHOTS[1]))

        # ---- 3 · Auto-tag with the toy tagger (proposed on the embedded model; the WebUI double's model is not
        # the toy, so there a missing WD v3 tagger is proposed, with its Download button: choose toy)
        d.tab("3")
        _choose_dropdown(page, "lt-tag-tagger", "toy")
        d.click("lt-tag-run")
        d.wait_status("lt-tag-progress")
        d.wait_images("lt-tag-gallery", 1)
        seen["screenshots"].append(d.shot(SHOTS[2]))

        # ---- 4 · Edit tags: the editor was loaded after tagging; tick the last tag, delete it, save
        d.tab("4")
        page.wait_for_function("() => /1\\//.test(document.querySelector('#lt-tags-status').innerText)",
                               timeout=60_000)
        boxes = page.locator("#lt-tags-list input[type=checkbox]")
        seen["tags_before"] = boxes.count()
        boxes.nth(boxes.count() - 1).check()
        d.click("lt-tags-delete")
        page.wait_for_function("n => document.querySelectorAll('#lt-tags-list input[type=checkbox]').length < n",
                               arg=seen["tags_before"], timeout=30_000)
        d.click("lt-tags-save")
        page.wait_for_function("() => /sav/i.test(document.querySelector('#lt-tags-status').innerText)",
                               timeout=30_000)
        seen["screenshots"].append(d.shot(SHOTS[3]))

        # ---- 5 · Estimate LR: a few probe steps, cancel, use the proposal (standalone only: in the WebUI's
        # page the probe runs on the double's model, the same Service code, and would double the run's time)
        if not webui:
            estimate_step(page, d, seen)

        if webui:  # training on the double's model in this page does not finish yet (see test_ui_browser)
            webui_reload_and_choices(page, d, seen, url, workspace)
            return

        # ---- 6 · Train: a few steps, an intermediate save halfway
        d.tab("6")
        seen["unet_lr"] = page.locator("#lt-train-unet-lr input").input_value()
        d.fill("lt-train-max-steps", 4)
        d.fill("lt-train-sync-every", 1)
        d.expand("lt-train-group-output")
        d.fill("lt-train-save-fractions", "0.5")
        page.wait_for_function("() => /4 steps/.test(document.querySelector('#lt-train-forecast').innerText)",
                               timeout=30_000)
        seen["forecast"] = d.text("lt-train-forecast")
        d.click("lt-train-run")
        if d.wait_status("lt-train-progress", ("finished", "failed", "cancelled", "interrupted")) != "finished":
            raise RuntimeError(f"training did not finish: {d.text('lt-train-msg')}")
        d.wait_images("lt-train-loss", 1, timeout=30_000)
        seen["train_msg"] = d.text("lt-train-msg")
        seen["screenshots"].append(d.shot(SHOTS[5]))

        # ---- reload mid-flow: the project worked on and its settings come back, and are acted on
        d.seconds["reload"] = time.time()
        reload_and_check(page, d, seen, url, workspace, webui)

        # ---- 7 · Test: two images with the final file, then the epoch × weight grid
        d.tab("7")
        d.fill("lt-test-steps", 2)
        d.click("lt-test-run")
        d.wait_status("lt-test-progress")
        seen["test_images"] = d.wait_images("lt-test-gallery", 2)
        if workspace is not None:
            seen["generate_projects"] = job_projects(workspace, "generate")
        d.click("lt-test-grid-run")
        d.wait_images("lt-test-grid", 1)
        seen["screenshots"].append(d.shot(SHOTS[6]))

        # ---- every option of every dropdown, radio and checkbox group, once
        d.seconds["choices"] = time.time()
        seen["choices"] = every_choice(page, d, url, workspace)


# --------------------------------------------------------------------------------------------- every option

# How each choice component of the tab is exercised (elem_id → case). Every option is chosen and the page
# must show it chosen; the cases add what choosing it must do. A component the served Blocks holds without
# an entry here fails the run, so a new dropdown comes with its case.
CASES = {
    "lt-project": "project",              # opens that project: the summary names it
    "lt-prepare-crop": "config", "lt-prepare-background": "config",
    "lt-tag-tagger": "tagger",            # and runs it: a known tagger, or "not available" — never "unknown"
    "lt-tag-existing": "config",
    "lt-tags-image": "plain", "lt-tags-list": "plain", "lt-tags-add-pos": "plain", "lt-tags-background": "plain",
    "lt-tags-suggestions": "plain", "lt-tags-bulk-pos": "plain",
    "lt-train-save-precision": "config", "lt-train-network": "config", "lt-train-optimizer": "config",
    "lt-train-lr-scheduler": "config", "lt-train-mixed-precision": "config",
    "lt-train-resume-job": "plain", "lt-test-lora": "plain", "lt-test-sampler": "plain",
    "lt-test-grid-files": "plain", "lt-disk-what": "plain",
}
CHOICE_TYPES = ("dropdown", "radio", "checkboxgroup")
TUPLE_LIKE = re.compile(r"^[(\[].*,.*[)\]]$")


def choice_components(url: str) -> list[dict]:
    """The served Blocks' choice components inside the tab (from gradio's /config)."""
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/config", timeout=30) as r:
        cfg = json.loads(r.read().decode("utf-8"))
    ids = {c["id"]: c for c in cfg["components"]}
    children: dict = {}

    def walk(node, inside):
        comp = ids.get(node["id"], {})
        inside = inside or comp.get("props", {}).get("elem_id") == "lt-root"
        if inside and comp.get("type") in CHOICE_TYPES:
            children[node["id"]] = comp
        for ch in node.get("children", []) or []:
            walk(ch, inside)

    walk(cfg["layout"], False)
    return list(children.values())


def _tab_of(elem_id: str) -> Optional[str]:
    for prefix, tab in (("lt-prepare-", "2"), ("lt-tag-", "3"), ("lt-tags-", "4"), ("lt-train-", "6"),
                        ("lt-test-", "7")):
        if elem_id.startswith(prefix):
            return tab
    return None


def reveal(page, eid: str) -> None:
    """Open every closed accordion around ``eid`` (gradio 3.41: a ``.label-wrap`` header, ``open`` when open)."""
    page.evaluate("""id => { const chain = [];
        for (let a = document.getElementById(id).parentElement; a; a = a.parentElement) chain.unshift(a);
        for (const a of chain) {  // outermost first: a tab inside an accordion inside a tab
            const head = a.querySelector(':scope > .label-wrap');
            if (head && !head.classList.contains('open')) head.click();
            if (a.classList.contains('tabitem') && getComputedStyle(a).display === 'none') {
                const items = [...a.parentElement.children].filter(e => e.classList.contains('tabitem'));
                const nav = a.parentElement.querySelector(':scope > .tab-nav');
                if (nav) nav.querySelectorAll('button')[items.indexOf(a)].click();
            } } }""", eid)
    page.wait_for_timeout(200)


def _dropdown_options(page, eid: str) -> list[str]:
    page.locator(f"#{eid} input").first.click()
    page.wait_for_timeout(150)
    opts = page.evaluate("id => [...document.querySelectorAll('#' + id + ' ul.options li')]"
                         ".map(li => li.getAttribute('data-value'))", eid)
    page.keyboard.press("Escape")
    return opts


def _choose_dropdown(page, eid: str, value: str) -> str:
    """Open the list and press the option (one step in the page, so a list that re-renders meanwhile does not
    lose the press); what the box shows afterwards."""
    box = page.locator(f"#{eid} input").first
    for _attempt in range(5):
        box.click()
        page.wait_for_timeout(100)
        pressed = page.evaluate("""([id, v]) => { const li = [...document.querySelectorAll('#' + id + ' ul.options li')]
            .find(e => e.getAttribute('data-value') === v);
            if (!li) return false; li.dispatchEvent(new MouseEvent('mousedown', {bubbles: true})); return true; }""",
                                [eid, value])
        if pressed:
            break
        page.wait_for_timeout(300)
    page.wait_for_timeout(150)
    shown = box.input_value()
    box.blur()
    return shown


def _run_tagger(page, d: "Driver") -> str:
    """Run the Tag step; the message it ends with. The end is the queue's ``process_completed`` for the run
    (counted on the page's websockets): the box may end with the same text it had before."""
    done = d.completed[0]
    d.click("lt-tag-run")
    deadline = time.time() + JOB_TIMEOUT / 1000
    while d.completed[0] == done and time.time() < deadline:
        page.wait_for_timeout(100)
    page.wait_for_timeout(300)
    return d.text("lt-tag-msg").strip()


def every_choice(page, d: "Driver", url: str, workspace: Optional[Path]) -> dict:
    """Choose every option of every choice component once (then put the first value back)."""
    comps = choice_components(url)
    report: dict = {"components": len(comps), "chosen": 0, "problems": []}
    missing = [c["props"].get("elem_id") or f"(no elem_id: {c['props'].get('label')})" for c in comps
               if c["props"].get("elem_id") not in CASES]
    if missing:
        report["problems"].append(f"choice components without a case in e2e_tab.CASES: {missing}")
    for comp in comps:
        eid, kind = comp["props"].get("elem_id"), comp["type"]
        case = CASES.get(eid)
        if case is None or not comp["props"].get("visible", True):
            continue
        tab = _tab_of(eid)
        if tab:
            d.tab(tab)
        reveal(page, eid)
        if kind == "dropdown":
            options = _dropdown_options(page, eid)
            first = page.locator(f"#{eid} input").first.input_value()
            for opt in options:
                if TUPLE_LIKE.match(opt or ""):
                    report["problems"].append(f"{eid}: the option {opt!r} is a pair shown as text")
                shown = _choose_dropdown(page, eid, opt)
                report["chosen"] += 1
                if shown != opt:
                    report["problems"].append(f"{eid}: chose {opt!r}, the page shows {shown!r}")
                if case == "project":
                    try:
                        page.wait_for_function("n => document.querySelector('#lt-project-summary').innerText"
                                               ".includes(n)", arg=opt, timeout=30_000)
                    except Exception:  # noqa: BLE001
                        report["problems"].append(f"{eid}: chose {opt!r}, the summary says "
                                                  f"{d.text('lt-project-summary')!r}")
                if case == "tagger":
                    msg = _run_tagger(page, d)
                    report.setdefault("tagger", {})[opt] = msg
                    if "unknown tagger" in msg or (("unavailable" in opt) != ("not available" in msg)):
                        report["problems"].append(f"{eid}: {opt!r} ran as {msg!r}")
            if options and first in options:
                _choose_dropdown(page, eid, first)
                if case == "project":
                    page.wait_for_function("n => document.querySelector('#lt-project-summary').innerText"
                                           ".includes(n)", arg=first, timeout=30_000)
        else:
            labels = page.locator(f"#{eid} label")
            n = labels.count()
            for i in range(n):
                label = labels.nth(i)
                text = label.inner_text().strip()
                if TUPLE_LIKE.match(text):
                    report["problems"].append(f"{eid}: the option {text!r} is a pair shown as text")
                box = label.locator("input")
                was = box.is_checked()
                box.click()
                report["chosen"] += 1
                page.wait_for_timeout(100)
                want = not was if kind == "checkboxgroup" else True   # a checkbox toggles, a radio is chosen
                if box.is_checked() != want:
                    report["problems"].append(f"{eid}: clicked {text!r}, ticked is {box.is_checked()}, not {want}")
                if kind == "checkboxgroup":
                    box.click()   # and back as it was
            if kind == "radio" and n:
                labels.nth(0).locator("input").click()
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running `ui` page")
    ap.add_argument("--serve", action="store_true", help="start `python -m lora_trainer ui` in a temporary workspace")
    ap.add_argument("--out", required=True, help="folder for the screenshots")
    ap.add_argument("--images", help="folder for the generated toy pictures (default: a temporary one)")
    ap.add_argument("--webui", action="store_true", help="serve the tab in the WebUI double's page (tests/webui_page.py)")
    args = ap.parse_args(argv)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="lt-e2e-"))
    images = toy_images(Path(args.images) if args.images else tmp / "photos")
    proc = None
    url = args.url
    workspace = None
    if args.serve or args.webui or not url:
        port = free_port()
        proc = serve(tmp / "ws", port, tmp / "ui.log", webui=args.webui)
        url = f"http://127.0.0.1:{port}/"
        workspace = tmp / "ws" / "lora_trainer" if args.webui else tmp / "ws"
    try:
        seen = click_through(url, Path(args.out), images, workspace=workspace, webui=args.webui)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(seen, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
