"""How our routes answer: JSON without NaN, and errors as ``{"error", "hint"}`` with a 4xx status.

Inside the WebUI the FastAPI app is the host's, shared with every extension, so we must not install
app-wide exception handlers (they would change how the WebUI's own ``/sdapi`` routes answer). Instead our
routes use their own ``APIRoute`` class whose handler catches everything raised while parsing, validating,
authenticating and running one of OUR requests, and turns it into our JSON error. The same handler bounds
the request body before it is read (``ApiLimits``).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..compat import validation_errors
from ..errors import UserError
from ..workspace import json_safe
from .security import ApiLimits

log = logging.getLogger("lora_trainer.api")


class SafeJSONResponse(JSONResponse):
    """JSONResponse that writes NaN/inf as null (FastAPI would answer 500, ``WEBUI_API.md`` §13)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(json_safe(content), ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8")


def error_json(status: int, message: str, hint: str = "", headers: dict | None = None) -> SafeJSONResponse:
    return SafeJSONResponse({"error": message, "hint": hint}, status_code=status, headers=headers or None)


def status_for(exc: UserError) -> int:
    """The HTTP status of a UserError from the core: its own when it has one, else by what it says."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    msg = exc.message.lower()
    if msg.startswith(("no project", "no image", "no output", "no lora", "no training job", "no job",
                       "folder not found", "no images")):
        return 404
    if "already exists" in msg or "has a running job" in msg or msg.startswith("there is no webui"):
        return 409
    return 400


def error_response(exc: BaseException) -> Response:
    """Our JSON error for anything raised while handling one of our requests; never a stack trace."""
    if isinstance(exc, UserError):
        return error_json(status_for(exc), exc.message, exc.hint, getattr(exc, "headers", None))
    if isinstance(exc, RequestValidationError):
        errs = validation_errors(exc)
        shown = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in errs[:5])
        more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
        return error_json(422, f"invalid request: {shown}{more}",
                          "see the request models in the OpenAPI schema (/lora-trainer/v1/docs standalone)")
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_json(exc.status_code, detail, "", getattr(exc, "headers", None))
    log.exception("lora-trainer API: unexpected error")
    return error_json(500, f"internal error ({type(exc).__name__})",
                      "this is a bug or an environment problem; the server log has the details")


def _body_limit(request: Request, limits: ApiLimits) -> Response | None:
    """413/411 before the body is read: uploads up to ``max_upload_bytes``, anything else ``max_json_bytes``."""
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE") and "content-length" not in request.headers:
        return None
    ctype = request.headers.get("content-type", "")
    limit = limits.max_upload_bytes if ctype.startswith("multipart/") else limits.max_json_bytes
    length = request.headers.get("content-length")
    if length is None:
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            return error_json(411, "a request body needs a Content-Length header", "send the body in one piece")
        return None
    try:
        n = int(length)
    except ValueError:
        return error_json(400, "invalid Content-Length header", "")
    if n > limit:
        return error_json(413, f"request body too large: {n} bytes, the limit is {limit}",
                          "send fewer or smaller files per request" if ctype.startswith("multipart/")
                          else "send a smaller request")
    return None


async def _not_an_object(request: Request) -> Response | None:
    """422 for a JSON body that is not an object (``[]``, ``null``, ``"x"``, ``5``). FastAPI hands ``null``
    to the route as "no body" (the defaults: a train route would start a job), and pydantic 1 builds a model
    from ``[]``; neither is what the client meant."""
    if request.headers.get("content-type", "").startswith(("multipart/", "application/x-www-form-urlencoded")):
        return None
    raw = await request.body()  # (cached on the request: the route reads the same bytes)
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None  # not JSON at all: FastAPI's own 422 says so
    if isinstance(value, dict):
        return None
    kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "null" if value is None
                                                                       else "a number")
    return error_json(422, f"invalid request: the body must be a JSON object, not {kind}",
                      "send {} (or no body) for the defaults; see the request models in the OpenAPI schema")


def route_class(limits: ApiLimits) -> type:
    """An APIRoute subclass whose handler bounds the body and turns every exception into our JSON error."""

    class LoraTrainerRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            inner = super().get_route_handler()

            async def handler(request: Request) -> Response:
                refused = _body_limit(request, limits)
                if refused is None and self.body_field is not None:
                    refused = await _not_an_object(request)
                if refused is not None:
                    return refused
                try:
                    return await inner(request)
                except Exception as exc:  # noqa: BLE001 - every error becomes our JSON, never a traceback
                    return error_response(exc)

            return handler

    return LoraTrainerRoute
