"""The tab on a real gradio 3.41 server on 127.0.0.1, clicked through its seven steps by headless Chromium
(``tests/e2e_tab.py``, playwright driving Debian's ``/usr/bin/chromium``; no browser download): in the
standalone ``ui`` page, and inside a page built as WebUI 1.10.1 builds it (the WebUI double, ``on_ui_tabs``,
ui-config.json: ``tests/webui_page.py``). Both reload mid-flow (the project worked on, and its settings, come
back and are acted on) and choose every option of every dropdown, radio and checkbox group once.

Runs where both are present (``.ci/run`` installs Debian's chromium, the standalone profile has playwright);
elsewhere it is skipped with the reason. The click-through runs in a child process with its own time limit,
so a browser that hangs fails this test instead of the suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_diffusers

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    needs_diffusers,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed"),
]


def click_through(tmp_path, *flags) -> tuple[dict, object]:
    sys.path.insert(0, str(HERE))
    out = tmp_path / "shots"
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(HERE / "e2e_tab.py"), *flags, "--out", str(out)],
                          capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):]), out


def check_reload_and_choices(seen: dict, trained: bool = True) -> None:
    # the reload came back on the project worked on (not "aaa", the page's own value) with its settings
    assert seen["reload"]["project"] == "e2e" and "e2e" in seen["reload"]["summary"], seen["reload"]
    assert seen["reload"]["tag_trigger"] == "zkw", seen["reload"]
    if trained:
        assert seen["reload"]["max_steps"] == "4" and seen["reload"]["sync_every"] == "1", seen["reload"]
        assert seen["generate_projects"] and set(seen["generate_projects"]) == {"e2e"}, seen["generate_projects"]
    else:   # the Tag run after the reload went to the project in view
        assert seen["tag_projects"] and set(seen["tag_projects"]) == {"e2e"}, seen["tag_projects"]
    ch = seen["choices"]
    assert ch["problems"] == [], ch["problems"]
    assert ch["components"] >= 20 and ch["chosen"] >= 60, ch
    assert set(ch["tagger"]) >= {"none", "toy"}, ch["tagger"]


def test_seven_steps_clicked_through_in_chromium_with_a_screenshot_each(tmp_path):
    from e2e_tab import SHOTS

    seen, out = click_through(tmp_path, "--serve")
    for name in SHOTS:
        shot = out / name
        assert shot.is_file() and shot.stat().st_size > 10_000, name   # a rendered page, not a blank one
    assert seen["test_images"] >= 2 and "4 steps" in seen["forecast"]
    assert seen["tooltip"], "the options carry their one-line help as a tooltip"
    assert seen["page_errors"] == [], seen["page_errors"]
    check_reload_and_choices(seen)


def test_the_tab_in_the_webui_page_reloads_and_takes_every_option(tmp_path):
    """Steps 1-4 in the WebUI double's page, a reload, a Tag run after it, and every option. (Training in this
    page does not finish yet: the job stays "running" without progress, to be looked into; the train
    settings' return after a reload is checked in the standalone run and in test_ui_tab.)"""
    seen, _out = click_through(tmp_path, "--webui")
    assert seen["page_errors"] == [], seen["page_errors"]
    check_reload_and_choices(seen, trained=False)
