"""A real HTTP server on 127.0.0.1 that answers the Hugging Face hub's file routes the way the hub does.

``/{repo}/resolve/{revision}/{path}``: HEAD and GET. A small (git) file answers 200 with ``ETag`` = its git
blob sha1; an LFS file answers 302 to its CDN address with ``X-Linked-Etag`` = its sha256 and
``X-Linked-Size``, and the CDN address serves it with ``Range`` support (416 past the end). Every answer
carries ``X-Repo-Commit``. Plain files (rembg's GitHub release) are at ``/release/{name}``, redirected as
GitHub does (no size, no hash); ``/api/models/{repo}/revision/{rev}`` lists a repository's files
(``siblings``); ``cdn`` puts the redirects' target on another origin.
That is what ``huggingface_hub``'s ``hf_hub_download`` reads in both profiles (0.36 and 2.x: the HEAD's
``X-Repo-Commit``, ``X-Linked-Etag``, ``X-Linked-Size``, ``ETag`` and ``Location``, then the CDN with ``Range``);
``agents`` records each request's User-Agent (which client fetched the bytes).
``drop_after`` makes the next GET of a file send that many bytes and then drop the connection; ``slow``
paces every body (a download that can be killed midway).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubDouble:
    def __init__(self):
        self.files: dict[str, tuple[bytes, bool, str]] = {}  # route -> (data, lfs, advertised sha256)
        self.drop_after: Optional[int] = None
        self.slow = 0.0                                      # seconds of pause per 64 KiB sent
        self.cdn = ""                                        # another origin for the LFS redirects ("" = this one)
        self.requests: list[tuple[str, str, str]] = []      # (method, path, Range header)
        self.auth: list[tuple[str, str]] = []               # (path, Authorization header) of every request
        self.agents: list[tuple[str, str, str]] = []        # (method, path, User-Agent) of every request
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add_hub(self, repo: str, path: str, data: bytes, lfs: bool = True, revision: str = "main",
                advertise: Optional[str] = None) -> None:
        """``advertise``: a sha256 to publish instead of the true one (a corrupt download)."""
        self.files[f"/{repo}/resolve/{revision}/{path}"] = (data, lfs, advertise or hashlib.sha256(data).hexdigest())

    def add_release(self, name: str, data: bytes) -> None:
        self.files[f"/release/{name}"] = (data, False, "")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _find(self):
                path = self.path.split("?")[0]
                if path.startswith("/cdn/"):
                    key = next((k for k, v in hub.files.items() if hashlib.sha256(v[0]).hexdigest()
                                == path[5:]), None)
                    return (key, False) if key else (None, False)
                return (path, True) if path in hub.files else (None, True)

            def _api(self) -> bool:
                """``/api/models/{repo}/revision/{rev}``: the repository's file list, as the hub gives it."""
                path = self.path.split("?")[0]
                if not path.startswith("/api/models/") or "/revision/" not in path:
                    return False
                repo, rev = path[len("/api/models/"):].split("/revision/")
                prefix = f"/{repo}/resolve/{rev}/"
                body = json.dumps({"id": repo, "sha": COMMIT, "siblings": [
                    {"rfilename": k[len(prefix):]} for k in hub.files if k.startswith(prefix)]}).encode()
                self.send_response(200 if any(k.startswith(prefix) for k in hub.files) else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return True

            def _answer(self, head: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Range", "")))
                hub.auth.append((self.path, self.headers.get("Authorization", "")))
                hub.agents.append((self.command, self.path, self.headers.get("User-Agent", "")))
                if self._api():
                    return
                key, front = self._find()
                if key is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                data, lfs, sha = hub.files[key]
                if front and key.startswith("/release/"):  # GitHub: a bare redirect, no size, no hash
                    self.send_response(302)
                    self.send_header("Location", f"{hub.cdn}/cdn/{hashlib.sha256(data).hexdigest()}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if front and lfs:  # the hub: metadata here, the bytes on the CDN
                    self.send_response(302)
                    self.send_header("Location", f"{hub.cdn}/cdn/{hashlib.sha256(data).hexdigest()}")
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                    self.send_header("ETag", '"%s"' % hashlib.sha1(b"lfs pointer").hexdigest())
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                if start and start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if key.startswith("/release/"):
                    self.send_header("ETag", '"%s"' % hashlib.md5(data).hexdigest()[:20])  # GitHub's: no hash
                else:
                    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                    self.send_header("ETag", f'"{sha if lfs else blob}"')
                    self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                if head:
                    return
                if hub.drop_after is not None:
                    cut, hub.drop_after = hub.drop_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if not hub.slow:
                    self.wfile.write(body)
                    return
                import time

                for i in range(0, len(body), 1 << 16):
                    try:
                        self.wfile.write(body[i:i + (1 << 16)])
                        self.wfile.flush()
                    except OSError:  # the client went away (killed)
                        return
                    time.sleep(hub.slow)

            def do_HEAD(self):
                self._answer(True)

            def do_GET(self):
                self._answer(False)

        return Handler
