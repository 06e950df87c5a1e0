"""Serve the tab inside the WebUI double's page (``webui_double/page.py``) on 127.0.0.1, for the browser test.

    python tests/webui_page.py --root DIR --port N [--project NAME ...]

The double goes into ``sys.modules`` with ``DIR`` as the WebUI's data folder, ``scripts/lora_trainer_ext.py``
is loaded as the WebUI loads it, the projects named are created, and the page is built twice: the first
build is the WebUI's first start (it writes ``ui-config.json``), the second a later start (it puts those
values back), which is the page served. The workspace is ``DIR/lora_trainer``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def load_script():
    sys.path.insert(0, str(ROOT))
    try:
        spec = importlib.util.spec_from_file_location("lora_trainer_ext.py", ROOT / "scripts" / "lora_trainer_ext.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    finally:
        sys.path.remove(str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--project", action="append", default=[])
    args = ap.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sys.path.insert(0, str(HERE))
    from webui_double.fixture import install
    from webui_double.page import create_ui

    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)
    install(root)
    load_script()
    from lora_trainer.host import webui
    from lora_trainer.ui.standalone import assets, inject_js

    for name in args.project:
        webui.get_service().create_project(name, trigger=name, repeats=1)
    css, scripts = assets()
    create_ui(root / "ui-config.json", css, inject_js(scripts))          # the first start
    demo = create_ui(root / "ui-config.json", css, inject_js(scripts))   # a later one
    demo.queue(64)
    print(f"webui page on http://127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    demo.launch(server_name="127.0.0.1", server_port=args.port, inbrowser=False, show_api=False, share=False,
                allowed_paths=[str(root)], prevent_thread_lock=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
