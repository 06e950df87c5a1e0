"""``scripts/lora_trainer_ext.py`` loaded the way the WebUI loads it (``modules/scripts.py: load_scripts``):
executed from its path with the extension folder on ``sys.path`` only while it runs, never put in
``sys.modules``. It registers exactly its five callbacks (1.6-style, no ``name=``), costs the WebUI start-up
next to nothing, and mounts API routes only with ``--api``/``--nowebui``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from webui_double.fixture import webui_double  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "lora_trainer_ext.py"
CALLBACKS = {"ui_tabs": 1, "ui_settings": 1, "app_started": 1, "script_unloaded": 1, "model_loaded": 1}


def load_script():
    sys.path.insert(0, str(ROOT))
    try:
        spec = importlib.util.spec_from_file_location(SCRIPT.name, SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT))
    return module


def callback(d, category):
    [cb] = d.m("script_callbacks").callback_map[f"callbacks_{category}"]
    return cb


def test_registers_exactly_its_callbacks(webui_double):
    script = load_script()
    assert webui_double.m("script_callbacks").registered() == CALLBACKS
    assert callback(webui_double, "ui_tabs") is script.on_ui_tabs
    assert SCRIPT.name not in sys.modules and callback(webui_double, "model_loaded") is script.on_model_loaded


def test_loading_the_entry_is_light_and_fast():
    code = f"""
import importlib.util, json, sys, time
sys.path.insert(0, {str(ROOT / "tests" / "webui_double")!r})
t0 = time.perf_counter()
sys.path.insert(0, {str(ROOT)!r})
spec = importlib.util.spec_from_file_location("lora_trainer_ext.py", {str(SCRIPT)!r})
spec.loader.exec_module(importlib.util.module_from_spec(spec))
sys.path.remove({str(ROOT)!r})
elapsed = time.perf_counter() - t0
heavy = [m for m in ("torch", "gradio", "numpy", "PIL", "fastapi", "lora_trainer.host", "lora_trainer.service",
                     "lora_trainer.jobs") if m in sys.modules]
from modules import script_callbacks
print(json.dumps({{"elapsed": elapsed, "heavy": heavy, "registered": script_callbacks.registered()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["heavy"] == [] and res["registered"] == CALLBACKS
    assert res["elapsed"] < 1.0, res


# Imported only when a step needs them: none of these may come with the extension's start-up (its load, the
# tab's build, the API's mount). rembg pulls in pymatting, whose numba code compiles on the first import
# after install (~40 s of the WebUI's start). The host's own imports (torch, gradio, ...) do not count.
HEAVY = ("rembg", "pymatting", "onnxruntime", "numba", "llvmlite", "cv2", "skimage", "pooch", "diffusers",
         "pillow_heif", "pillow_avif", "bitsandbytes", "tensorboard", "peft", "lora_trainer.training.loop",
         "lora_trainer.prepare.pipeline", "lora_trainer.tagging.wd14_model")


def test_start_up_imports_nothing_heavy():
    """The WebUI's start as far as the extension is concerned, in a fresh process with the double: the script
    loaded the WebUI's way, then ``on_ui_tabs`` (the tab is built while the WebUI starts) and
    ``on_app_started`` with ``--api``. Heavy modules the host has not imported stay out of ``sys.modules``."""
    code = f"""
import importlib.util, json, os, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {str(ROOT / "tests")!r})
from webui_double.fixture import install
root = Path(tempfile.mkdtemp(prefix="lt-startup-"))
os.chdir(root)
os.environ["HF_HUB_OFFLINE"] = "1"
d, _ = install(root)
import gradio, fastapi  # the WebUI has these before it loads extensions
before = set(sys.modules)
t0 = time.perf_counter()
sys.path.insert(0, {str(ROOT)!r})
spec = importlib.util.spec_from_file_location("lora_trainer_ext.py", {str(SCRIPT)!r})
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)
sys.path.remove({str(ROOT)!r})
[(blocks, _title, _id)] = script.on_ui_tabs()
d.flags(api=True)
script.on_app_started(None, fastapi.FastAPI())
elapsed = time.perf_counter() - t0
new = set(sys.modules) - before
heavy = {HEAVY!r}
print(json.dumps({{"elapsed": elapsed, "imported": sorted(m for m in heavy if m in new),
                  "host_had": sorted(m for m in heavy if m in before), "tab": type(blocks).__name__,
                  "lora_trainer": sorted(m for m in new if m.startswith("lora_trainer"))}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/",
                         env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["tab"] == "Blocks" and "lora_trainer.ui.tab" in res["lora_trainer"], res
    assert not {"rembg", "pymatting", "numba"} & set(res["host_had"]), res   # else this test could not fail
    assert res["imported"] == [], res
    # the extension's share of the start-up (load, tab, API) on a busy CI machine; ~0.5 s on an idle one
    assert res["elapsed"] < 5.0, res


def test_settings_section_and_prefixed_keys(webui_double):
    load_script()
    callback(webui_double, "ui_settings")()
    opts = webui_double.shared.opts
    ours = {k: v for k, v in opts.data_labels.items() if k.startswith("lora_trainer_")}
    assert set(ours) == {"lora_trainer_workspace", "lora_trainer_default_tagger", "lora_trainer_rembg_model",
                         "lora_trainer_publish", "lora_trainer_test_sampler", "lora_trainer_api_roots"}
    assert all(v.section == ("lora_trainer", "LoRA Trainer") for v in ours.values())
    assert opts.lora_trainer_default_tagger == "deepbooru" and opts.data["lora_trainer_publish"] is True
    assert "deepbooru" in ours["lora_trainer_default_tagger"].component_args["choices"]
    assert ours["lora_trainer_workspace"].restart and ours["lora_trainer_api_roots"].restart


@pytest.fixture
def fake_api(monkeypatch):
    calls = []

    def mount_routes(app, service, *, enabled, auth, token=None, roots=None, roots_hint=None):
        calls.append({"service": service, "enabled": enabled, "auth": auth, "roots": roots, "hint": roots_hint})
        if enabled:
            app.add_api_route("/lora-trainer/v1/ping", lambda: {"ok": True}, methods=["GET"])
        return enabled

    monkeypatch.setitem(sys.modules, "lora_trainer.api", types.SimpleNamespace(mount_routes=mount_routes))
    return calls


def test_app_started_mounts_nothing_without_api(webui_double, fake_api):
    from fastapi import FastAPI

    load_script()
    app = FastAPI()
    before = len(app.routes)
    callback(webui_double, "app_started")(None, app)
    assert len(app.routes) == before and fake_api == []
    assert sys.modules.get("lora_trainer.host.webui") is None or sys.modules["lora_trainer.host.webui"]._service is None


@pytest.mark.parametrize("flag", ["api", "nowebui"])
def test_app_started_mounts_routes_with_api(webui_double, fake_api, flag):
    from fastapi import FastAPI

    from lora_trainer.host import webui

    load_script()
    webui_double.flags(**{flag: True, "api_auth": "u:p, u2:p:2"})
    app = FastAPI()
    callback(webui_double, "app_started")(None if flag == "nowebui" else object(), app)
    [call] = fake_api
    assert call["enabled"] is True and call["auth"] == [("u", "p"), ("u2", "p:2")]
    assert call["service"] is webui.get_service()
    assert any(getattr(r, "path", "") == "/lora-trainer/v1/ping" for r in app.routes)
    # the API may read the workspace only, unless the user's setting names more folders
    assert [str(r) for r in call["roots"]] == [str(webui.get_service().workspace)]
    assert "Settings > LoRA Trainer" in call["hint"]


def test_the_api_roots_setting_adds_folders_to_import_from(webui_double, fake_api):
    import os
    from pathlib import Path

    from fastapi import FastAPI

    from lora_trainer.host import webui

    load_script()
    webui_double.flags(api=True)
    webui_double.shared.opts.data["lora_trainer_api_roots"] = f" /srv/photos {os.pathsep}~/pics{os.pathsep}"
    try:
        callback(webui_double, "app_started")(None, FastAPI())
    finally:
        webui_double.shared.opts.data.pop("lora_trainer_api_roots", None)
    [call] = fake_api
    assert call["roots"] == [webui.get_service().workspace, Path("/srv/photos"), Path(os.path.expanduser("~/pics"))]


def test_app_started_tolerates_a_missing_api_module(webui_double, monkeypatch):
    load_script()
    webui_double.flags(api=True)
    monkeypatch.setitem(sys.modules, "lora_trainer.api", None)  # "import lora_trainer.api" raises ImportError
    callback(webui_double, "app_started")(None, object())


def test_ui_tabs_builds_the_tab_with_service_and_host_info(webui_double, monkeypatch):
    from lora_trainer.host import webui

    seen = []
    tab = types.SimpleNamespace(build_tab=lambda service, info: seen.append((service, info)) or "BLOCKS")
    monkeypatch.setitem(sys.modules, "lora_trainer.ui.tab", tab)
    load_script()
    assert callback(webui_double, "ui_tabs")() == [("BLOCKS", "LoRA Trainer", "lora_trainer")]
    [(service, info)] = seen
    assert service is webui.get_service() and info["host_kind"] == "a1111" and info["can_train"]


def test_ui_tabs_shows_an_error_tab_when_building_fails(webui_double, monkeypatch):
    import gradio as gr

    def broken(service, info):
        raise RuntimeError("boom")

    monkeypatch.setitem(sys.modules, "lora_trainer.ui.tab", types.SimpleNamespace(build_tab=broken))
    load_script()
    [(blocks, title, elem_id)] = callback(webui_double, "ui_tabs")()
    assert isinstance(blocks, gr.Blocks) and (title, elem_id) == ("LoRA Trainer", "lora_trainer")


def test_unload_and_model_loaded_callbacks(webui_double):
    from lora_trainer.host import webui

    load_script()
    callback(webui_double, "model_loaded")(webui_double.model)  # nothing running: nothing happens
    callback(webui_double, "script_unloaded")()                 # no service yet: nothing to stop
    service = webui.get_service()
    callback(webui_double, "script_unloaded")()
    assert webui._service is None and not service.runner._thread.is_alive()


def test_the_real_tab_and_api_mount_on_the_double(webui_double, caplog):
    """Integration with the tab and API modules as they are (skipped while either is absent)."""
    pytest.importorskip("lora_trainer.ui.tab")
    pytest.importorskip("lora_trainer.api")
    import gradio as gr
    from fastapi import FastAPI

    load_script()
    callback(webui_double, "ui_settings")()
    [(blocks, _title, _id)] = callback(webui_double, "ui_tabs")()
    assert isinstance(blocks, gr.Blocks)
    assert not [r for r in caplog.records if "building the tab failed" in r.getMessage()]
    webui_double.flags(api=True, api_auth="u:p")
    app = FastAPI()
    callback(webui_double, "app_started")(None, app)
    assert asgi_get(app, "/lora-trainer/v1/info") == 401
    assert asgi_get(app, "/lora-trainer/v1/info", auth=("u", "p")) == 200


def asgi_get(app, path: str, auth=None) -> int:
    """The status of one GET through the ASGI app (no HTTP client: starlette's TestClient and the standalone
    profile's httpx do not agree)."""
    import asyncio
    import base64

    headers = [(b"host", b"127.0.0.1")]
    if auth:
        headers.append((b"authorization", b"Basic " + base64.b64encode(":".join(auth).encode())))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    status = {}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]

    asyncio.run(app(scope, receive, send))
    return status["code"]
