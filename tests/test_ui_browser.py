"""The standalone ``ui`` on a real gradio 3.41 server on 127.0.0.1, clicked through its seven steps by headless
Chromium (``tests/e2e_tab.py``, playwright driving Debian's ``/usr/bin/chromium``; no browser download).

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


def test_seven_steps_clicked_through_in_chromium_with_a_screenshot_each(tmp_path):
    sys.path.insert(0, str(HERE))
    from e2e_tab import SHOTS

    out = tmp_path / "shots"
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(HERE / "e2e_tab.py"), "--serve", "--out", str(out)],
                          capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    seen = json.loads(proc.stdout[proc.stdout.index("{"):])
    for name in SHOTS:
        shot = out / name
        assert shot.is_file() and shot.stat().st_size > 10_000, name   # a rendered page, not a blank one
    assert seen["test_images"] >= 2 and "4 steps" in seen["forecast"]
    assert seen["tooltip"], "the options carry their one-line help as a tooltip"
    assert seen["page_errors"] == [], seen["page_errors"]
