"""Who may reach a server we start: the one rule for ``serve`` (bearer token) and ``ui`` (password).

Both listen on the loopback interface by default. Any other address makes the workspace readable and
writable (and the GPU usable) by whoever can reach the port, so it needs a credential; the check runs
before anything is loaded or bound.
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from .errors import UserError

MIN_SECRET = 8


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, :: and every other name."""
    h = (host or "").strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_binding(host: str, secret: Optional[str], what: str, how: str) -> None:
    """UserError for a non-loopback ``host`` without ``secret``, or a ``secret`` shorter than 8 characters.
    ``what``: the credential's name ("a token"); ``how``: the flags that set it."""
    if not is_loopback(host) and not secret:
        raise UserError(f"refusing to listen on {host} without {what}: anyone who can reach it could use it "
                        "and read and write the workspace", f"add {how}, or keep --host 127.0.0.1")
    if secret is not None and len(secret) < MIN_SECRET:
        raise UserError(f"{what} is too short", f"use at least {MIN_SECRET} characters (e.g. python -c "
                                                "'import secrets; print(secrets.token_urlsafe())')")
