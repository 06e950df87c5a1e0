"""``python -m lora_trainer ui``: the same tab as in the WebUI, served on its own.

The WebUI loads an extension's ``javascript/*.js`` and ``style.css`` by itself; here ``page`` does it: the
stylesheet becomes the page's ``css`` and each script is added to the document once the page has loaded
(a load hook, ``_js`` in gradio 3 / ``js`` in 4). The tab is built first and rendered into the page, which is
what the WebUI does with the Blocks ``on_ui_tabs`` returns. Listens on 127.0.0.1 unless told otherwise:
the page can read and write the workspace, so any other address needs ``--auth USER:PASSWORD`` (gradio's
login page), the same rule as ``serve``'s token (``binding.check_binding``).

Gradio's ``/file=`` route serves files under the workspace (``allowed_paths``) and the working directory
without resolving symbolic links, so a link in the workspace would hand out any file on the machine.
``FileRouteGuard`` sits in front of it and answers 403 unless the file, links followed, lies in the
workspace or gradio's own temporary folder (``paths.inside``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger("lora_trainer.ui")
ROOT = Path(__file__).resolve().parents[2]   # the extension folder: javascript/ and style.css live there
AUTH_ENV = "LORA_TRAINER_UI_AUTH"
FILE_ROUTES = ("/file=", "/file/")  # gradio 3.41: /file={path}, and the deprecated /file/{path}


def assets(root: Path = ROOT) -> tuple[str, list[str]]:
    """(css, [script sources]) from the extension folder; missing files are logged, not fatal."""
    css_file = root / "style.css"
    css = css_file.read_text(encoding="utf-8") if css_file.is_file() else ""
    scripts = [p.read_text(encoding="utf-8") for p in sorted((root / "javascript").glob("*.js"))]
    if not css or not scripts:
        log.warning("style.css or javascript/ not found beside the package (%s): tooltips and keys are off", root)
    return css, scripts


def inject_js(scripts: list[str]) -> str:
    """A load hook that adds each script to the document as the WebUI would."""
    body = json.dumps(scripts, ensure_ascii=False)
    return ("() => { for (const src of " + body + ") { const s = document.createElement('script'); "
            "s.textContent = src; document.head.appendChild(s); } }")


def page(service, host_info: Optional[dict] = None, root: Path = ROOT):
    """The standalone page: the tab rendered into a Blocks with our stylesheet and scripts."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from ..compat import js_kw
    from .tab import build_tab

    css, scripts = assets(root)
    tab = build_tab(service, host_info)
    # System fonts: the default theme would fetch web fonts, and this page makes no outside requests.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(css=css, title="LoRA Trainer", analytics_enabled=False, theme=theme) as app:
        tab.render()
        app.load(None, None, None, **js_kw(inject_js(scripts)))
    app.lora_trainer_tab = tab
    return app


def make_service(workspace: str, base_model: Optional[str] = None, device: Optional[str] = None):
    from ..service import Service, StandaloneModels

    if base_model:
        from ..models import refuse_ckpt

        refuse_ckpt(Path(base_model))
    return Service(Path(workspace).expanduser(), StandaloneModels(base_model=base_model,
                                                                  device=None if device in (None, "auto") else device))


def gradio_temp_dir() -> Path:
    """Where gradio keeps the copies it serves (gallery images, downloads, uploads)."""
    import tempfile

    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


class FileRouteGuard:
    """ASGI middleware: a ``/file=`` request whose file, symlinks followed, is outside ``roots`` gets 403."""

    def __init__(self, app, roots: list):
        self.app = app
        self.roots = roots

    def allowed(self, target: str) -> bool:
        from .. import paths

        if target.startswith(("http://", "https://")):
            return True  # gradio answers with a redirect; nothing is read here
        p = Path(target)
        return paths.inside(p if p.is_absolute() else Path.cwd() / p, self.roots)

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http":
            path = scope.get("path", "")
            for prefix in FILE_ROUTES:
                if path.startswith(prefix) and not self.allowed(path[len(prefix):]):
                    from starlette.responses import JSONResponse

                    body = {"error": f"file not allowed: {path[len(prefix):]}",
                            "hint": "only files inside the workspace are served (symbolic links leading out are not)"}
                    await JSONResponse(body, status_code=403)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def parse_auth(text: Optional[str]) -> list[tuple[str, str]]:
    """``USER:PASSWORD[,USER2:PASSWORD2]`` as gradio's ``auth`` pairs; UserError for a malformed item."""
    from ..errors import UserError

    pairs = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise UserError(f"--auth {item!r}: expected USER:PASSWORD", "e.g. --auth me:a-long-password")
        pairs.append((user, password))
    return pairs


def check_ui_binding(host: str, auth: list) -> None:
    """``ui`` refuses a non-loopback ``--host`` without ``--auth`` (anyone on the network could use the
    workspace), and passwords shorter than 8 characters."""
    from ..binding import check_binding

    if not auth:
        check_binding(host, None, "a password", f"--auth USER:PASSWORD (or set {AUTH_ENV})")
    for _user, password in auth:
        check_binding(host, password, "the --auth password", "--auth USER:PASSWORD")


def launch(app, host: str, port: Optional[int], workspace: str, block: bool = True, auth: Optional[list] = None):
    """Queue on (the steps stream progress from generators), then serve, ``/file=`` guarded."""
    from starlette.middleware import Middleware

    from ..compat import queue_kw

    ws = Path(workspace).expanduser().resolve()
    app.queue(**queue_kw(8))
    # quiet: no "set `share=True`" hint (a public link is what this server must not make); gradio still
    # prints its local URL, after our own line naming the workspace
    return app.launch(server_name=host, server_port=port, inbrowser=False, show_api=False, share=False, quiet=True,
                      allowed_paths=[str(ws)], prevent_thread_lock=not block, auth=auth or None,
                      app_kwargs={"middleware": [Middleware(FileRouteGuard, roots=[ws, gradio_temp_dir()])]})


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; any other needs --auth)")
    p.add_argument("--port", type=int, default=7861, help="port (default: 7861)")
    p.add_argument("--workspace", default="lora_trainer_workspace", metavar="DIR",
                   help="folder holding the projects (default: ./lora_trainer_workspace)")
    p.add_argument("--base-model", metavar="PATH", default=None,
                   help="diffusers folder, .safetensors checkpoint, hub repository id (owner/name[@revision]) "
                        "or URL of a .safetensors file, downloaded into the cache on first use (default: the "
                        "embedded toy model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--lang", default="en", choices=("en", "zh_CN"), help="language of the tab (default: en)")
    p.add_argument("--auth", metavar="USER:PASSWORD", default=None,
                   help=f"require this login (comma-separate several); needed for any --host other than "
                        f"127.0.0.1 (default: ${AUTH_ENV})")


def model_label(base_model: Optional[str]) -> str:
    """What the page says it trains on: the user's model, the embedded toy model, or the stand-in."""
    if base_model:
        return Path(base_model).name
    from ..toy import model as toy_model

    return "embedded toy model" if toy_model.available() else "tiny random stand-in (toy model weights not built)"


def _run(args: argparse.Namespace) -> int:
    auth = parse_auth(args.auth if args.auth is not None else os.environ.get(AUTH_ENV))
    check_ui_binding(args.host, auth)
    service = make_service(args.workspace, args.base_model, args.device)
    host_info = {"lang": args.lang, "host": "standalone", "family": model_label(args.base_model)}
    app = page(service, host_info)
    print(f"LoRA Trainer on http://{args.host}:{args.port} (workspace {Path(args.workspace).resolve()})",
          file=sys.stderr)
    try:
        launch(app, args.host, args.port, args.workspace, block=True, auth=auth)
    finally:
        service.runner.shutdown()
    return 0


def register(commands: dict) -> None:
    commands["ui"] = ("the tab in a browser, standalone (same seven steps as in the WebUI)", _args, _run)
