"""Bodies of the wrong shape never start anything (issue 28, item 2).

A JSON body that is not an object (``[]``, ``null``, a string, a number) is a 422 on EVERY route that takes
a body (table-driven over the router's routes: a new body route is covered without a change here), and
nothing is queued or written. A JSON value of the wrong type is a 422, not a silent coercion: ``5`` for a
string, ``"yes"`` for a boolean, ``"1e-4"`` for a number (a number field still takes an integer).
No model is loaded: these run in both CI profiles.
"""

from __future__ import annotations


import pytest
from conftest import flat_routes

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


@pytest.fixture()
def api(tmp_path):
    from lora_trainer.api import PREFIX, create_app
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service

    service = Service(tmp_path / "ws")
    service.create_project("p", trigger="zkw")
    app = create_app(service)
    server = BackgroundServer(app).start()
    client = httpx.Client(base_url=server.url + PREFIX, timeout=30)
    yield {"client": client, "service": service, "app": app, "prefix": PREFIX, "ws": tmp_path / "ws"}
    client.close()
    server.stop()
    service.runner.shutdown()




def body_routes(app, prefix: str) -> list:
    """(method, url) of every route of ours whose handler takes a JSON body, path parameters filled in."""
    from fastapi.routing import APIRoute

    out = []
    for r in flat_routes(app.routes):
        if not isinstance(r, APIRoute) or not r.path.startswith(prefix) or r.body_field is None:
            continue
        url = r.path[len(prefix):].replace("{name}", "p").replace("{job_id}", "nojob")
        for m in sorted(r.methods - {"HEAD"}):
            out.append((m, url))
    return out


def test_a_body_that_is_not_an_object_is_422_everywhere(api):
    c, service = api["client"], api["service"]
    routes = body_routes(api["app"], api["prefix"])
    assert {("POST", "/projects/p/train"), ("PATCH", "/projects/p"), ("POST", "/projects/p/images")} <= set(routes)
    assert len(routes) >= 12
    jobs_before = service.runner.list()
    project_before = (api["ws"] / "p" / "project.json").read_bytes()
    for method, url in routes:  # (the upload route too: a JSON body there is refused the same way)
        for raw in (b"[]", b"null", b'"x"', b"5", b"true", b"[{}]"):
            r = c.request(method, url, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422, (method, url, raw, r.status_code, r.text)
            assert set(r.json()) == {"error", "hint"}, r.text
    assert service.runner.list() == jobs_before              # nothing was queued
    assert (api["ws"] / "p" / "project.json").read_bytes() == project_before
    assert [p["name"] for p in c.get("/projects").json()] == ["p"]
    # nested objects too (pydantic 1 made {} of [] there)
    for body in ({"prepare": []}, {"prepare": [["crop", "center"]]}, {"tag": "toy"}):
        r = c.post("/projects/p/preprocess", json=body)
        assert r.status_code == 422, (body, r.text)
    assert service.runner.list() == jobs_before
    # no body at all, or {}: the defaults, as before
    r = c.post("/projects/p/tag", json={"tagger": "toy"})
    assert r.status_code == 202, r.text
    service.runner.wait(r.json()["job"], 60)


def test_values_of_the_wrong_type_are_not_coerced(api):
    c, service = api["client"], api["service"]
    jobs_before = service.runner.list()
    bad = [
        ("POST", "/projects", {"name": 5}),
        ("POST", "/projects", {"name": "q", "trigger": 5}),
        ("POST", "/projects", {"name": "q", "repeats": "30"}),
        ("POST", "/projects", {"name": "q", "repeats": 30.0}),
        ("PATCH", "/projects/p", {"trigger": 7}),
        ("PATCH", "/projects/p", {"trigger": ["a"]}),
        ("POST", "/projects/p/images/import", {"path": 5}),
        ("POST", "/projects/p/train", {"name": 5}),
        ("POST", "/projects/p/train", {"trigger_word": True}),
        ("POST", "/projects/p/train", {"train_unet": "yes"}),
        ("POST", "/projects/p/train", {"train_unet": 1}),
        ("POST", "/projects/p/train", {"unet_lr": "1e-4"}),
        ("POST", "/projects/p/train", {"unet_lr": True}),
        ("POST", "/projects/p/train", {"alpha": "64"}),
        ("POST", "/projects/p/estimate", {"plateau_epsilon": "0.1"}),
        ("POST", "/projects/p/generate", {"prompts": [5]}),
        ("POST", "/projects/p/generate", {"prompts": ["a"], "weight": "1"}),
        ("POST", "/projects/p/generate", {"prompts": ["a"], "sampler": 3}),
        ("POST", "/projects/p/captions/bulk", {"action": "add", "tags": [1]}),
        ("PATCH", "/projects/p/captions", {"captions": {"a.png": [1]}}),
        ("POST", "/projects/p/preprocess", {"prepare": {"crop": 5}}),
    ]
    for method, url, body in bad:
        r = c.request(method, url, json=body)
        assert r.status_code == 422, (method, url, body, r.status_code, r.text)
        assert set(r.json()) == {"error", "hint"}, r.text
    assert service.runner.list() == jobs_before
    assert [p["name"] for p in c.get("/projects").json()] == ["p"]
    assert c.get("/projects/p").json()["trigger"] == "zkw"
    # the right types still pass, and an integer is a fine number
    r = c.post("/projects", json={"name": "q", "trigger": "abc", "repeats": 3})
    assert r.status_code == 201, r.text
    r = c.get("/projects/q/train-config")
    assert r.status_code == 200
    from lora_trainer.api import models as M

    opts = M.TrainOptions(**{"unet_lr": 1, "alpha": 64, "train_unet": False, "name": "x"})
    assert M.given(opts) == {"unet_lr": 1, "alpha": 64, "train_unet": False, "name": "x"}
    g = M.GenerateRequest(prompts=["a"], weight=1, cfg_scale=7)
    assert float(g.weight) == 1.0 and float(g.cfg_scale) == 7.0


def test_generate_defaults_are_the_models_not_the_webuis(api):
    """A generate request without steps or cfg_scale draws at the model's own values (the embedded toy model
    samples at CFG 3; the API had CFG 7 and 20 steps built into its request model)."""
    c, service = api["client"], api["service"]
    want = service.sampling()
    r = c.post("/projects/p/generate", json={"prompts": ["zkw, red"]})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    try:
        cfg = c.get(f"/jobs/{job}").json()["config"]
        assert (cfg["cfg_scale"], cfg["steps"]) == (want["cfg_scale"], want["steps"]), cfg
        from lora_trainer.toy import model as toy_model

        if toy_model.available():
            assert cfg["cfg_scale"] == 3.0
    finally:
        c.post(f"/jobs/{job}/cancel")
        service.runner.wait(job, 120)
