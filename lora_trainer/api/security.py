"""What keeps the HTTP API safe to leave running: path confinement, size limits, authentication.

Why each piece exists:
- **Roots.** (The rule itself is ``lora_trainer.paths``; this adds what only HTTP needs.) A request may
  name a server-side path (a folder of photos to import, a face-detector or
  background model file). Every such path must resolve, symlinks followed, inside one of the configured
  roots (the workspace, ``serve --root DIR``). ``..`` is refused outright (even when it would stay inside),
  as are percent-encoded separators or dots: a JSON body never needs URL encoding, so ``%2e%2e%2f`` can
  only be an attempt to slip past a check that decodes later.
- **Names.** A URL segment that names a file (an output, an image, a job file) must be one plain name:
  no separators, no ``..``, no leading dot (our own metadata folders), no encoded forms of those.
- **Limits.** Uploads are bounded by ``Content-Length`` before the body is read (the server refuses more
  bytes than the header declares, so the check is real), and a project's image count is bounded before
  anything is copied. Zip archives are checked against entry and unpacked-size limits on top of the
  importer's zip-slip and zip-bomb guards.
- **Auth.** The WebUI's ``--api-auth`` does not cover extension routes (``../shared/WEBUI_API.md`` §2.2), so
  our routes check the same HTTP Basic credentials themselves; standalone ``serve`` uses a bearer token and
  refuses to listen beyond the loopback interface without one.
"""

import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional, Sequence
from urllib.parse import unquote

from .. import paths
from ..binding import check_binding, is_loopback  # noqa: F401 (is_loopback: re-exported)
from ..errors import UserError

PREFIX = "/lora-trainer/v1"  # every route of ours lives under it (WebUI extensions share one app)
_ENCODED_PATH_CHARS = re.compile(r"%(2e|2f|5c|00|25)", re.IGNORECASE)
MAX_PATH_CHARS = 4096


class ApiError(UserError):
    """A UserError with the HTTP status it should be answered with."""

    def __init__(self, status: int, message: str, hint: str = "", headers: Optional[dict] = None):
        super().__init__(message, hint)
        self.status = status
        self.headers = headers or {}


@dataclass
class ApiLimits:
    """Bounds on what one request may make the server store or do."""

    max_upload_bytes: int = 1 << 30          # one upload request (files and zips together)
    max_json_bytes: int = 1 << 20            # any other request body
    max_images: int = 2000                   # images a project's source/ may hold
    max_unpacked_bytes: int = 4 << 30        # one zip archive, unpacked
    max_zip_entries: int = 20000             # one zip archive
    max_generate_images: int = 16            # prompts x seeds of one generate request
    max_log_records: int = 10000             # records one log request returns

    def as_dict(self) -> dict:
        return asdict(self)


def _decoded_forms(raw: str, rounds: int = 3) -> list[str]:
    forms = [raw]
    for _ in range(rounds):
        nxt = unquote(forms[-1])
        if nxt == forms[-1]:
            break
        forms.append(nxt)
    return forms


def _has_dotdot(text: str) -> bool:
    return any(part == ".." for part in re.split(r"[\\/]", text))


def check_name(name: str, what: str = "file name") -> str:
    """``name`` if it is one plain file name; ApiError 400 otherwise."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ApiError(400, f"invalid {what}", "give a plain file name as listed by the API")
    for form in _decoded_forms(name):
        if "/" in form or "\\" in form or "\x00" in form or form in (".", "..") or form.startswith("."):
            raise ApiError(400, f"invalid {what} {name!r}: only a plain file name is accepted here",
                           "use a name exactly as the list route returns it")
    if _ENCODED_PATH_CHARS.search(name):
        raise ApiError(400, f"invalid {what} {name!r}: percent-encoded characters are not accepted",
                       "use the name exactly as the list route returns it")
    return name


def check_relative(rel: str, what: str = "file") -> PurePosixPath:
    """A relative path of plain names (``samples/x.png``); each part passes ``check_name``."""
    if not isinstance(rel, str) or not rel or len(rel) > MAX_PATH_CHARS:
        raise ApiError(400, f"invalid {what} path", "use a path as the list route returns it")
    parts = rel.split("/")
    for part in parts:
        check_name(part, what)
    return PurePosixPath(*parts)


def within(path: Path, folder: Path) -> Path:
    """``path`` resolved (symlinks followed) if it lies inside ``folder`` (resolved); 404 otherwise
    (``paths.child``: a name that escapes a folder is, from the folder's point of view, not there)."""
    return paths.child(folder, os.path.relpath(os.path.abspath(path), os.path.abspath(folder)))


class Roots:
    """The folders server-side paths in requests may point into."""

    def __init__(self, roots: Iterable[os.PathLike | str], hint: Optional[str] = None):
        self.absolute = [Path(os.path.abspath(r)) for r in roots]
        if not self.absolute:
            raise ValueError("at least one root is required")
        self.resolved = [p.resolve() for p in self.absolute]
        self.hint = hint or "put it under one of the server's roots (serve --root DIR)"

    def __iter__(self):
        return iter(self.resolved)

    @staticmethod
    def _inside(path: Path, roots: Sequence[Path]) -> bool:
        return any(path == r or r in path.parents for r in roots)

    def confine(self, raw: str, what: str = "path") -> Path:
        """The resolved path for ``raw`` (absolute, or relative to the first root) if it stays inside a
        root; ApiError 400 for a malformed path, 403 for one that points elsewhere."""
        if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_PATH_CHARS:
            raise ApiError(400, f"{what}: empty or too long", "give a path inside the server's configured roots")
        if "\x00" in raw:
            raise ApiError(400, f"{what}: contains a NUL character", "give a plain path")
        if _ENCODED_PATH_CHARS.search(raw) or any(_has_dotdot(f) for f in _decoded_forms(raw)):
            raise ApiError(400, f"{what}: '..' and percent-encoded path characters are not accepted",
                           "give the path plainly, inside the server's configured roots")
        p = Path(raw)
        lexical = Path(os.path.abspath(p if p.is_absolute() else self.absolute[0] / p))
        if not (self._inside(lexical, self.absolute) or self._inside(lexical, self.resolved)):
            raise ApiError(403, f"{what}: {raw!r} is outside the folders this server may use", self.hint)
        return paths.confine(lexical, self.resolved, what, 403, "copy the files under one of the server's roots")


# --------------------------------------------------------------------------------------------- auth

def parse_api_auth(text: Optional[str]) -> list[tuple[str, str]]:
    """The WebUI's ``--api-auth "user:pass,user2:pass2"`` as ``[(user, pass)]``."""
    out = []
    for item in (text or "").split(","):
        if ":" in item:
            user, password = item.strip().split(":", 1)
            out.append((user, password))
    return out


def check_serve_binding(host: str, token: Optional[str]) -> None:
    """``serve`` refuses a non-loopback ``--host`` without ``--token`` (anyone on the network could train)."""
    check_binding(host, token, "a token", "--token SECRET (or set LORA_TRAINER_TOKEN)")


def auth_dependency(auth: Optional[Sequence[tuple[str, str]]], token: Optional[str]):
    """A FastAPI dependency checking HTTP Basic ``auth`` pairs and/or a bearer ``token``; None when neither
    is configured. The schemes appear in the OpenAPI schema."""
    if not auth and not token:
        return None
    from fastapi import Depends
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

    pairs = [(u.encode("utf-8"), p.encode("utf-8")) for u, p in (auth or [])]
    secret = token.encode("utf-8") if token else None
    challenge = ", ".join(x for x in ("Basic" if pairs else "", "Bearer" if secret else "") if x)

    def ok_basic(c: Optional[HTTPBasicCredentials]) -> bool:
        if c is None or not pairs:
            return False
        user, pw = c.username.encode("utf-8"), c.password.encode("utf-8")
        good = False
        for u, p in pairs:  # no early exit: the time taken does not say which user matched
            good |= secrets.compare_digest(user, u) & secrets.compare_digest(pw, p)
        return good

    def ok_bearer(c: Optional[HTTPAuthorizationCredentials]) -> bool:
        return bool(c is not None and secret is not None
                    and secrets.compare_digest(c.credentials.encode("utf-8"), secret))

    def refuse():
        raise ApiError(401, "authentication required", "send the WebUI's --api-auth credentials (HTTP Basic) or "
                       "the server's token (Authorization: Bearer TOKEN)", headers={"WWW-Authenticate": challenge})

    if pairs and secret:
        def check(b: Optional[HTTPBasicCredentials] = Depends(HTTPBasic(auto_error=False)),
                  t: Optional[HTTPAuthorizationCredentials] = Depends(HTTPBearer(auto_error=False))) -> None:
            if not (ok_basic(b) or ok_bearer(t)):
                refuse()
    elif pairs:
        def check(b: Optional[HTTPBasicCredentials] = Depends(HTTPBasic(auto_error=False))) -> None:  # type: ignore[misc]
            if not ok_basic(b):
                refuse()
    else:
        def check(t: Optional[HTTPAuthorizationCredentials] = Depends(HTTPBearer(auto_error=False))) -> None:  # type: ignore[misc]
            if not ok_bearer(t):
                refuse()
    return check
