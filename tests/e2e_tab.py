"""Click through the seven steps of the standalone ``ui`` in headless Chromium and screenshot each step.

    python tests/e2e_tab.py --url http://127.0.0.1:7861/ --out DIR [--images DIR]
    python tests/e2e_tab.py --serve --out docs/images        # starts `python -m lora_trainer ui` itself

Driven by playwright (pip ``playwright``, no browser download) with Debian's ``/usr/bin/chromium``. Each
step is done as a person would: create a project, upload toy-world pictures, crop, auto-tag, delete a tag
and save, run the LR probe and cancel it after a few steps, "Use these", train a few steps, generate and
build the epoch × weight grid. Screenshots: ``OUT/tab-1-images.png`` … ``OUT/tab-7-test.png``.
Exits non-zero (with the step that failed) when anything does not show up in time.
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


def serve(workspace: Path, port: int, log_file: Path) -> subprocess.Popen:
    """``python -m lora_trainer ui`` on 127.0.0.1:port; returns once the page answers."""
    import urllib.request

    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "lora_trainer", "ui", "--workspace", str(workspace), "--port",
                             str(port), "--device", "cpu"], stdout=open(log_file, "w"), stderr=subprocess.STDOUT,
                            env=env)
    deadline = time.time() + 120
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
    raise RuntimeError("ui did not answer within 120 s")


class Driver:
    """Small helpers over a playwright page for gradio 3.41's markup."""

    def __init__(self, page, out: Path):
        self.page, self.out = page, out

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


def click_through(url: str, out: Path, images: list[Path], headless: bool = True) -> dict:
    """The seven steps; returns what was seen (for the test's assertions)."""
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
            _steps(page, d, seen, images, url)
        except Exception:
            page.screenshot(path=str(out / "failure.png"), full_page=True)
            raise
        finally:
            seen["page_errors"] = errors
            browser.close()
    seen["screenshots"] = [str(s) for s in seen["screenshots"]]
    return seen


def _steps(page, d: Driver, seen: dict, images: list[Path], url: str) -> None:
    if True:
        page.goto(url)
        page.wait_for_selector("#lt-root", timeout=60_000)
        page.wait_for_function("() => document.querySelector('#lt-project') && "
                               "document.querySelector('#lt-project').getAttribute('title')", timeout=30_000)
        seen["tooltip"] = page.get_attribute("#lt-train-rank", "title")

        # ---- 1 · Images: a new project, pictures uploaded
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

        # ---- 3 · Auto-tag (the toy tagger is proposed on the embedded model)
        d.tab("3")
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

        # ---- 5 · Estimate LR: a few probe steps, cancel, use the proposal
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
        d.wait_status("lt-train-progress")
        d.wait_images("lt-train-loss", 1, timeout=30_000)
        seen["train_msg"] = d.text("lt-train-msg")
        seen["screenshots"].append(d.shot(SHOTS[5]))

        # ---- 7 · Test: two images with the final file, then the epoch × weight grid
        d.tab("7")
        d.fill("lt-test-steps", 2)
        d.click("lt-test-run")
        d.wait_status("lt-test-progress")
        seen["test_images"] = d.wait_images("lt-test-gallery", 2)
        d.click("lt-test-grid-run")
        d.wait_images("lt-test-grid", 1)
        seen["screenshots"].append(d.shot(SHOTS[6]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running `ui` page")
    ap.add_argument("--serve", action="store_true", help="start `python -m lora_trainer ui` in a temporary workspace")
    ap.add_argument("--out", required=True, help="folder for the screenshots")
    ap.add_argument("--images", help="folder for the generated toy pictures (default: a temporary one)")
    args = ap.parse_args(argv)
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="lt-e2e-"))
    images = toy_images(Path(args.images) if args.images else tmp / "photos")
    proc = None
    url = args.url
    if args.serve or not url:
        port = free_port()
        proc = serve(tmp / "ws", port, tmp / "ui.log")
        url = f"http://127.0.0.1:{port}/"
    try:
        seen = click_through(url, Path(args.out), images)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(seen, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
