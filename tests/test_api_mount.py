"""``mount_routes`` on a host's FastAPI app (what ``on_app_started`` does in the WebUI): nothing when not
enabled; with ``--api-auth`` credentials, 401 without them and 200 with them; the host's own routes and
exception handlers are left as they were."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def host_app():
    """A stand-in for the WebUI's app: FastAPI with a route of its own that raises HTTPException."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI()

    @app.get("/sdapi/v1/ping")
    def ping():
        return {"pong": True}

    @app.get("/sdapi/v1/fail")
    def fail():
        raise HTTPException(status_code=418, detail="host says no")

    return app


@pytest.fixture()
def service(tmp_path):
    from lora_trainer.service import Service

    svc = Service(tmp_path / "ws")
    yield svc
    svc.runner.shutdown()


def test_not_enabled_adds_nothing(service):
    from lora_trainer.api import mount_routes
    from lora_trainer.api.serve import BackgroundServer

    app = host_app()
    before = list(app.routes)
    assert mount_routes(app, service, enabled=False, auth=None) is False
    assert list(app.routes) == before
    with BackgroundServer(app) as srv:
        r = httpx.get(srv.url + "/lora-trainer/v1/projects")
        assert r.status_code == 404 and r.json() == {"detail": "Not Found"}  # the host's own 404
        assert "/lora-trainer" not in httpx.get(srv.url + "/openapi.json").text


def test_api_auth_credentials_are_required_and_the_host_is_untouched(service):
    from lora_trainer.api import mount_routes
    from lora_trainer.api.security import parse_api_auth
    from lora_trainer.api.serve import BackgroundServer

    auth = parse_api_auth("alice:s3cret,bob:pa:ss:word")
    assert auth == [("alice", "s3cret"), ("bob", "pa:ss:word")]
    app = host_app()
    handlers = dict(app.exception_handlers)
    middleware = list(app.user_middleware)
    assert mount_routes(app, service, enabled=True, auth=auth) is True
    assert dict(app.exception_handlers) == handlers and list(app.user_middleware) == middleware
    with BackgroundServer(app) as srv:
        url = srv.url + "/lora-trainer/v1"
        for path in ("/projects", "/info", "/jobs", "/no-such-route"):
            r = httpx.get(url + path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic", (path, r.text)
            assert r.json()["error"] == "authentication required"
            assert httpx.get(url + path, auth=("alice", "wrong")).status_code == 401
            assert httpx.get(url + path, auth=("mallory", "s3cret")).status_code == 401
        assert httpx.get(url + "/projects", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
        assert httpx.post(url + "/projects", json={"name": "x"}).status_code == 401
        assert not (service.workspace / "x").exists()
        r = httpx.get(url + "/projects", auth=("alice", "s3cret"))
        assert r.status_code == 200 and r.json() == []
        r = httpx.post(url + "/projects", json={"name": "x"}, auth=("bob", "pa:ss:word"))
        assert r.status_code == 201 and r.json()["name"] == "x"
        assert httpx.get(url + "/info", auth=("bob", "pa:ss:word")).json()["auth"] == ["basic"]
        # the host's routes: no auth added, their own error format kept
        assert httpx.get(srv.url + "/sdapi/v1/ping").json() == {"pong": True}
        r = httpx.get(srv.url + "/sdapi/v1/fail")
        assert r.status_code == 418 and r.json() == {"detail": "host says no"}
        assert httpx.get(srv.url + "/sdapi/v1/nothing").json() == {"detail": "Not Found"}
        # the host's OpenAPI schema documents our routes and the Basic scheme
        schema = httpx.get(srv.url + "/openapi.json").json()
        assert "/lora-trainer/v1/projects/{name}/train" in schema["paths"]
        assert any(s.get("scheme") == "basic" for s in schema["components"]["securitySchemes"].values())


def test_enabled_without_auth_answers_and_both_schemes_can_coexist(service):
    from lora_trainer.api import mount_routes
    from lora_trainer.api.serve import BackgroundServer

    open_app, both_app = host_app(), host_app()
    assert mount_routes(open_app, service, enabled=True, auth=None)
    assert mount_routes(both_app, service, enabled=True, auth=[("u", "p")], token="a-long-token")
    with BackgroundServer(open_app) as a, BackgroundServer(both_app) as b:
        assert httpx.get(a.url + "/lora-trainer/v1/projects").status_code == 200
        url = b.url + "/lora-trainer/v1/projects"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, auth=("u", "p")).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer a-long-token"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_mounting_again_replaces_our_routes_only(service, tmp_path):
    from lora_trainer.api import mount_routes
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service

    app = host_app()
    mount_routes(app, service, enabled=True, auth=None)
    n = len(app.routes)
    other = Service(tmp_path / "other")
    other.create_project("fresh")
    try:
        mount_routes(app, other, enabled=True, auth=None)
        assert len(app.routes) == n
        with BackgroundServer(app) as srv:
            assert [p["name"] for p in httpx.get(srv.url + "/lora-trainer/v1/projects").json()] == ["fresh"]
            assert httpx.get(srv.url + "/sdapi/v1/ping").json() == {"pong": True}
    finally:
        other.runner.shutdown()


def test_the_hosts_roots_and_their_hint(service, tmp_path):
    """The WebUI mounts with its workspace plus the folders of its setting; a path elsewhere is refused with
    the host's way of adding a folder, and a path inside an added folder imports."""
    from PIL import Image

    from lora_trainer.api import mount_routes
    from lora_trainer.api.serve import BackgroundServer

    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    for folder in (photos, elsewhere):
        folder.mkdir()
        Image.new("RGB", (16, 16), (9, 9, 9)).save(folder / "a.png")
    app = host_app()
    assert mount_routes(app, service, enabled=True, roots=[service.workspace, photos],
                        roots_hint="add it in Settings, then restart")
    with BackgroundServer(app) as srv:
        url = srv.url + "/lora-trainer/v1"
        assert httpx.post(url + "/projects", json={"name": "p"}).status_code == 201
        r = httpx.post(url + "/projects/p/images/import", json={"path": str(elsewhere)})
        assert r.status_code == 403 and r.json()["hint"] == "add it in Settings, then restart", r.text
        r = httpx.post(url + "/projects/p/images/import", json={"path": str(photos)})
        assert r.status_code == 201 and r.json()["copied"] == ["a.png"], r.text
