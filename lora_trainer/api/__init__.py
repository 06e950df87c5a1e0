"""The HTTP API: every step of the flow under ``/lora-trainer/v1``, in the WebUI and standalone.

- In the WebUI, ``scripts/lora_trainer_ext.py`` calls :func:`mount_routes` from ``on_app_started`` with
  ``enabled = --api or --nowebui`` (``on_app_started`` fires without ``--api`` too, and with ``--listen``
  our routes would then be open to the network) and ``auth`` from ``--api-auth``, which does not cover
  extension routes by itself (``../shared/WEBUI_API.md`` §2.2).
- Standalone, ``python -m lora_trainer serve`` (``serve.py``) runs :func:`create_app` with uvicorn on
  127.0.0.1, and refuses any other address without a token.

Importing this package is cheap (no fastapi, no torch): the WebUI imports it at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence

from .security import PREFIX, ApiLimits

__all__ = ["ApiLimits", "PREFIX", "create_app", "mount_routes"]


def mount_routes(app, service, *, enabled: bool, auth: Optional[Sequence[tuple]] = None,
                 token: Optional[str] = None, roots: Optional[Iterable] = None,
                 limits: Optional[ApiLimits] = None, roots_hint: Optional[str] = None) -> bool:
    """Add our routes to the FastAPI ``app``; False (and nothing added) when not ``enabled``.

    ``auth``: ``[(user, password)]`` (the WebUI's ``--api-auth``): HTTP Basic required on every route.
    ``token``: a bearer token required on every route (standalone ``serve``). Either one is accepted when
    both are given. ``roots``: folders server-side paths in requests may point into (default: the
    service's workspace); ``roots_hint``: what a refused path's answer tells the user to do (the host's way
    of adding a root). Only our routes are touched: no app-wide middleware or exception handlers.
    """
    if not enabled:
        return False
    from .routes import build_router
    from .security import Roots, auth_dependency

    auth = [tuple(a) for a in (auth or [])]
    schemes = (["basic"] if auth else []) + (["bearer"] if token else [])
    roots = Roots(list(roots) if roots is not None else [Path(service.workspace)], hint=roots_hint)
    router = build_router(service, roots=roots, limits=limits or ApiLimits(),
                          auth_dep=auth_dependency(auth, token), auth_schemes=schemes)
    # Mounted again on the same app (a reloaded extension): the new routes replace ours, nobody else's.
    # What we added is remembered by identity (newer FastAPI wraps an included router in one entry).
    previous = {id(r) for r in getattr(app.state, "lora_trainer_routes", [])}
    app.router.routes[:] = [r for r in app.router.routes if id(r) not in previous]
    before = {id(r) for r in app.router.routes}
    app.include_router(router)
    app.state.lora_trainer_routes = [r for r in app.router.routes if id(r) not in before]
    app.openapi_schema = None  # a schema generated before this call would not list our routes
    return True


def create_app(service, *, token: Optional[str] = None, roots: Optional[Iterable] = None,
               limits: Optional[ApiLimits] = None):
    """The standalone FastAPI app: our routes, with the OpenAPI schema and docs under our prefix."""
    from fastapi import FastAPI

    from .. import __version__

    app = FastAPI(title="LoRA Trainer", version=__version__, openapi_url=f"{PREFIX}/openapi.json",
                  docs_url=f"{PREFIX}/docs", redoc_url=None,
                  description="A folder of photos to a working LoRA: projects, preparation, tags, LR estimate, "
                              "training, test images. Long steps are jobs: poll /jobs/{id}.")
    mount_routes(app, service, enabled=True, auth=None, token=token, roots=roots, limits=limits)
    return app
