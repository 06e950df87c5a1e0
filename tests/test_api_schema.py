"""The OpenAPI schema: every route of the flow is in it, every config field is exposed with its help,
range and choices (drift test), and a property-based run over the schema with schemathesis finds no 5xx.

schemathesis needs anyio >= 4.5; the WebUI host profile pins anyio 3, so that part runs in the standalone
profile only (requirements/test-standalone.txt)."""

from __future__ import annotations

import dataclasses
import itertools
import threading

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

EXAMPLES = 12  # per operation: ~350 requests, a few seconds
ROUTES = {
    ("get", "/info"), ("get", "/samplers"), ("get", "/models"), ("post", "/models/{model_id}/download"), ("get", "/projects"), ("post", "/projects"), ("get", "/projects/{name}"),
    ("patch", "/projects/{name}"), ("delete", "/projects/{name}"), ("get", "/projects/{name}/train-config"),
    ("get", "/projects/{name}/images"), ("post", "/projects/{name}/images"),
    ("post", "/projects/{name}/images/import"), ("get", "/projects/{name}/images/{image}"),
    ("delete", "/projects/{name}/images/{image}"), ("post", "/projects/{name}/preprocess"),
    ("post", "/projects/{name}/tag"), ("get", "/projects/{name}/captions"), ("patch", "/projects/{name}/captions"),
    ("post", "/projects/{name}/captions/bulk"), ("get", "/projects/{name}/captions/suggestions"),
    ("post", "/projects/{name}/captions/suggestions/apply"), ("post", "/projects/{name}/estimate"),
    ("post", "/projects/{name}/train"), ("post", "/projects/{name}/generate"), ("get", "/jobs"),
    ("get", "/jobs/{job_id}"), ("get", "/jobs/{job_id}/log"), ("post", "/jobs/{job_id}/cancel"),
    ("post", "/jobs/{job_id}/resume"), ("get", "/jobs/{job_id}/files"), ("get", "/jobs/{job_id}/files/{file}"),
    ("get", "/projects/{name}/outputs"), ("get", "/projects/{name}/outputs/{file}"),
    ("get", "/projects/{name}/disk"), ("post", "/projects/{name}/cleanup"),
}


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def live(tmp_path):
    """A server whose jobs queue but do not run (the runner waits on a lock the test holds), on a workspace
    with a project ``p`` that has images, captions, an output and a finished job to point requests at."""
    from lora_trainer.api import PREFIX, create_app
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service

    from test_api_e2e import models

    hold = threading.Lock()
    service = Service(tmp_path / "ws", models(), lock=hold)  # job-starting routes point at the toy model
    service.create_project("p", trigger="zkw", repeats=2)
    ds = service.dataset_dir("p")
    ds.mkdir(parents=True)
    for i in range(2):
        (ds / f"i{i}.png").write_bytes(_png())
        (ds / f"i{i}.txt").write_text("zkw, 1girl, nose, hat, witch hat", encoding="utf-8")
        (service.project("p").source / f"s{i}.png").write_bytes(_png())
    (service.project("p").output / "zkw.safetensors").write_bytes(b"\0" * 16)
    done = service.runner.submit("test", lambda ctx: {"ok": True}, config={"project": "p"},
                                 parent=service.project("p").jobs)
    service.runner.wait(done, 30)
    hold.acquire()
    server = BackgroundServer(create_app(service, roots=[tmp_path / "ws"])).start()
    yield server.url + PREFIX, service, done
    server.stop()
    for st in service.runner.list():  # queued jobs never start; the one waiting for the lock stops at once
        service.runner.cancel(st["id"])
    service.models = _NoModel()
    hold.release()
    service.runner.shutdown(timeout=60)


class _NoModel:
    """After the property run: a job that got past the lock finds no model and fails at once."""

    def backend(self):
        from lora_trainer.errors import UserError

        raise UserError("test over", "")

    def preset(self):
        return None

    def generator(self, backend):
        return self.backend()

    def publish(self, lora_file, name):
        return None


def test_every_route_is_in_the_schema_and_exposes_every_config_field(live):
    from lora_trainer.config import TrainConfig
    from lora_trainer.prepare.config import PrepareConfig, TagConfig

    url, _, _ = live
    schema = httpx.get(url + "/openapi.json").json()
    have = {(m, p[len("/lora-trainer/v1"):]) for p, ops in schema["paths"].items() for m in ops}
    assert ROUTES <= have, sorted(ROUTES - have)
    comps = schema["components"]["schemas"]
    for cls, model in ((TrainConfig, "TrainOptions"), (PrepareConfig, "PrepareOptions"), (TagConfig, "TagOptions")):
        props = comps[model]["properties"]
        assert set(props) == {f.name for f in dataclasses.fields(cls)}, model
        assert comps[model].get("additionalProperties") is False
        for f in dataclasses.fields(cls):
            p, md = props[f.name], f.metadata
            assert p["description"].startswith(md["help"]), f.name
            if "choices" in md:
                enum = p.get("enum") or next((x.get("enum") for x in p.get("anyOf", []) if "enum" in x), None)
                assert list(enum) == list(md["choices"]), f.name
            if "min" in md:
                assert p.get("minimum", next((x.get("minimum") for x in p.get("anyOf", []) if "minimum" in x), None)) \
                    == md["min"], f.name
            if "max" in md:
                assert p.get("maximum", next((x.get("maximum") for x in p.get("anyOf", []) if "maximum" in x), None)) \
                    == md["max"], f.name
    assert set(comps["EstimateOptions"]["properties"]) >= {f.name for f in dataclasses.fields(TrainConfig)}


def test_property_based_run_over_the_schema_finds_no_5xx(live):
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis needs anyio>=4.5 (standalone profile)")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode

    url, service, done = live
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    counter = itertools.count()
    problems: list = []
    statuses: dict = {}
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= len(ROUTES)

    for op in ops:
        # Valid requests and, as often, requests that break the schema (wrong types, missing fields).
        strategy = op.as_strategy() | op.as_strategy(GenerationMode.NEGATIVE)

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=strategy)
        def run(case):
            n = next(counter)
            # Half the requests name the real project / job / files, so they reach the Service.
            if n % 2 and case.path_parameters:
                if "name" in case.path_parameters:
                    case.path_parameters["name"] = "p"
                if "job_id" in case.path_parameters:
                    case.path_parameters["job_id"] = done
            if "p" not in [p.name for p in service.workspace.iterdir()]:
                service.create_project("p")
            resp = case.call(base_url=url.rsplit("/lora-trainer/v1", 1)[0])
            statuses[resp.status_code // 100] = statuses.get(resp.status_code // 100, 0) + 1
            if resp.status_code >= 500:
                problems.append((case.method, case.formatted_path, case.path_parameters, case.query, case.body,
                                 resp.status_code, resp.text[:300]))
            elif resp.status_code >= 400:
                body = resp.json()
                assert set(body) == {"error", "hint"}, (case.method, case.formatted_path, body)

        run()
    assert not problems, problems[:5]
    print("status classes:", statuses, "jobs queued:", len(service.runner.list()))
    assert statuses.get(2, 0) >= len(ROUTES)  # plenty of requests got through to the Service
    assert next(counter) >= 3 * len(ROUTES)  # (hypothesis stops early on routes with few distinct inputs)
