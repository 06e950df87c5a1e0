"""``python -m lora_trainer serve``: the HTTP API standalone, with uvicorn.

Secure by default: it listens on 127.0.0.1, and refuses any other address unless a token is set (then
every request needs ``Authorization: Bearer TOKEN``). Server-side paths in requests are confined to the
workspace and the ``--root`` folders.

Importing this module is cheap (the CLI imports it to list commands); fastapi and uvicorn load in ``_run``.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
from pathlib import Path
from typing import Optional

DEFAULT_PORT = 7870
TOKEN_ENV = "LORA_TRAINER_TOKEN"


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--workspace", metavar="DIR", default="lora_trainer_workspace",
                   help="where projects live (default ./lora_trainer_workspace)")
    p.add_argument("--root", metavar="DIR", action="append", default=[],
                   help="a folder requests may import from or name model files in (repeatable; the workspace "
                        "is always one)")
    p.add_argument("--token", default=None,
                   help=f"require 'Authorization: Bearer TOKEN' on every request (default: ${TOKEN_ENV})")
    p.add_argument("--base-model", metavar="PATH", default=None,
                   help="diffusers folder or .safetensors checkpoint (default: the embedded toy model)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--max-upload-mb", type=int, default=None, help="largest upload request in MiB (default 1024)")
    p.add_argument("--max-images", type=int, default=None, help="most images per project (default 2000)")


def build(args: argparse.Namespace):
    """(app, service) for the parsed arguments; UserError for an unsafe or invalid setup."""
    from ..errors import UserError
    from ..service import Service, StandaloneModels
    from . import create_app
    from .security import ApiLimits, check_serve_binding

    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    check_serve_binding(args.host, token)
    roots = [Path(args.workspace)]
    for r in args.root:
        if not Path(r).is_dir():
            raise UserError(f"--root {r}: not a folder", "give an existing folder")
        roots.append(Path(r))
    limits = ApiLimits()
    if args.max_upload_mb is not None:
        limits.max_upload_bytes = max(1, args.max_upload_mb) << 20
    if args.max_images is not None:
        limits.max_images = max(1, args.max_images)
    service = Service(args.workspace, StandaloneModels(args.base_model, args.device))
    return create_app(service, token=token, roots=roots, limits=limits), service


def _run(args: argparse.Namespace) -> int:
    app, service = build(args)
    import uvicorn

    print(f"LoRA Trainer API on http://{args.host}:{args.port}/lora-trainer/v1 (docs: /lora-trainer/v1/docs)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        service.runner.shutdown(cancel_running=True)
    return 0


def register(commands: dict) -> None:
    commands["serve"] = ("the HTTP API standalone (127.0.0.1 by default; --token for any other address)",
                         _args, _run)


class BackgroundServer:
    """uvicorn serving ``app`` on a thread, on a free port of ``host`` (tests, and embedding the API).

    The socket is bound before the thread starts, so the port is known and nobody can take it meanwhile.
    """

    def __init__(self, app, host: str = "127.0.0.1"):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread: Optional[threading.Thread] = None

    def start(self, timeout: float = 20.0) -> "BackgroundServer":
        import time

        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="lora-trainer-api", daemon=True)
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
