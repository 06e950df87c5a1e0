"""The API's security over real HTTP: traversal (encoded, absolute, symlink) gets a 4xx with nothing read
or written outside the roots (checked on the filesystem), upload limits and zip guards, bearer auth,
errors as JSON without a traceback, NaN answered as null, and ``serve``'s refusal of an open address
without a token. No model is loaded: these run in both CI profiles."""

from __future__ import annotations

import http.client
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

TOKEN = "test-token-0123456789"
SECRET = b"TOPSECRET-do-not-serve"


def _png(color=(200, 30, 30), size=16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def snapshot(root: Path, skip: tuple = ()) -> dict:
    """Every path under ``root`` (not following links) with its size and mtime."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if any(str(rel).startswith(s) for s in skip):
            continue
        for name in dirs + files:
            p = Path(dirpath) / name
            if str(rel / name) in skip:
                continue
            st = p.lstat()
            out[str(rel / name)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture()
def env(tmp_path):
    from lora_trainer.api import ApiLimits, PREFIX, create_app
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service

    ws, photos, outside = tmp_path / "ws", tmp_path / "photos", tmp_path / "outside"
    photos.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "secret.png").write_bytes(_png((1, 2, 3)))
    (outside / "boxes.json").write_text("{}")
    for i in range(2):
        (photos / f"p{i}.png").write_bytes(_png((10 * i, 100, 100)))
    os.symlink(outside, photos / "escape")                       # a symlinked folder inside a root
    os.symlink(outside / "secret.png", photos / "linked.png")    # a symlinked file inside a root
    service = Service(ws)
    limits = ApiLimits(max_upload_bytes=300_000, max_json_bytes=20_000, max_images=7, max_unpacked_bytes=2_000_000)
    server = BackgroundServer(create_app(service, token=TOKEN, roots=[ws, photos], limits=limits)).start()
    client = httpx.Client(base_url=server.url + PREFIX, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert client.post("/projects", json={"name": "p", "trigger": "zkw"}).status_code == 201
    out = ws / "p" / "output"
    (out / "ok.safetensors").write_bytes(b"not really a lora")
    os.symlink(outside / "secret.txt", out / "evil.safetensors")
    job = service.preprocess("p", {})
    service.runner.wait(job, 60)
    os.symlink(outside / "secret.png", service.runner.job_dir(job) / "leak.png")
    yield {"client": client, "service": service, "server": server, "tmp": tmp_path, "ws": ws, "photos": photos,
           "outside": outside, "job": job, "prefix": PREFIX}
    client.close()
    server.stop()
    service.runner.shutdown()


def raw_request(env, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    """Send ``path`` exactly as written (httpx would normalise ``..`` and re-encode)."""
    conn = http.client.HTTPConnection("127.0.0.1", env["server"].port, timeout=30)
    conn.request(method, env["prefix"] + path, body=body or None,
                 headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data, dict(resp.getheaders())


def test_traversal_in_url_paths_gets_4xx_and_touches_nothing(env):
    outside_before = snapshot(env["outside"])
    tree_before = snapshot(env["tmp"])
    job = env["job"]
    attempts = [
        ("GET", "/projects/p/outputs/..%2F..%2F..%2Foutside%2Fsecret.txt"),
        ("GET", "/projects/p/outputs/%2e%2e%2f%2e%2e%2fproject.json"),
        ("GET", "/projects/p/outputs/%252e%252e%252fproject.json"),
        ("GET", "/projects/p/outputs/..%5c..%5cproject.json"),
        ("GET", "/projects/p/outputs/../../../outside/secret.txt"),
        ("GET", "/projects/p/outputs/evil.safetensors"),                 # symlink out of output/
        ("GET", "/projects/p/outputs/" + str(env["outside"] / "secret.txt").replace("/", "%2F")),
        ("GET", "/projects/..%2F..%2Foutside/outputs"),
        ("GET", "/projects/%2e%2e/outputs"),
        ("GET", "/projects/p/images/..%2F..%2F..%2Foutside%2Fsecret.png?where=source"),
        ("GET", "/projects/p/images/%2e%2e%252fproject.json?where=source"),
        ("GET", f"/jobs/{job}/files/..%2F..%2F..%2F..%2F..%2Foutside%2Fsecret.txt"),
        ("GET", f"/jobs/{job}/files/../../../../../outside/secret.txt"),
        ("GET", f"/jobs/{job}/files/samples/..%2F..%2Fstate.json"),
        ("GET", f"/jobs/{job}/files/leak.png"),                          # symlink out of the job folder
        ("GET", f"/jobs/{job}/files/error.log"),
        ("GET", "/jobs/..%2F..%2Fp/log"),
        ("DELETE", "/projects/p/images/..%2F..%2Fproject.json?where=source"),
        ("DELETE", "/projects/p/images/%2e%2e%2f%2e%2e%2fproject.json?where=source"),
        ("DELETE", "/projects/..%2Fws"),
        ("DELETE", "/projects/%2e%2e"),
    ]
    for method, path in attempts:
        status, body, _ = raw_request(env, method, path)
        assert 400 <= status < 500, (method, path, status, body)
        assert SECRET not in body and b"Traceback" not in body, (path, body)
        assert set(json.loads(body)) == {"error", "hint"}, (path, body)
    assert snapshot(env["outside"]) == outside_before
    assert snapshot(env["tmp"]) == tree_before
    # and the listing never shows the symlinked job file
    names = [f["name"] for f in env["client"].get(f"/jobs/{job}/files").json()["files"]]
    assert "leak.png" not in names and "error.log" not in names


def test_server_side_paths_are_confined_to_the_roots(env):
    c, outside, photos, ws = env["client"], env["outside"], env["photos"], env["ws"]
    outside_before = snapshot(env["outside"])
    cases = {
        str(outside): 403,
        "/etc": 403,
        str(outside / "secret.png"): 403,
        str(photos / ".." / "outside"): 400,
        "photos/../../outside": 400,
        "%2e%2e/outside": 400,
        str(photos) + "%2F..%2F..": 400,
        str(photos / "escape"): 403,              # a symlink inside a root that leads out
        str(photos / "escape" / "secret.png"): 403,
        str(photos / "linked.png"): 403,
        "": 422,
        "a\x00b": 400,
    }
    for path, want in cases.items():
        r = c.post("/projects/p/images/import", json={"path": path})
        assert r.status_code == want, (path, r.status_code, r.text)
    assert c.get("/projects/p/images", params={"where": "source"}).json()["images"] == []
    # the same rules for paths inside step options
    for body, want in [({"prepare": {"boxes": str(outside / "boxes.json")}}, 403),
                       ({"prepare": {"face_model": "../x.onnx"}}, 400),
                       ({"prepare": {"background": "custom", "model_path": "/etc/passwd"}}, 403),
                       ({"tag": {"tagger": "wd14", "model_dir": str(photos / "escape")}}, 403)]:
        r = c.post("/projects/p/preprocess", json=body)
        assert r.status_code == want, (body, r.text)
    assert c.post("/projects/p/tag", json={"tagger": "wd14", "model_dir": "/"}).status_code == 403
    # a folder inside a root imports its images, and does not follow the symlinks in it
    r = c.post("/projects/p/images/import", json={"path": str(photos)})
    assert r.status_code == 201, r.text
    assert sorted(r.json()["copied"]) == ["p0.png", "p1.png"]
    source = ws / "p" / "source"
    assert sorted(p.name for p in source.rglob("*")) == ["p0.png", "p1.png"]
    assert not any(p.is_symlink() for p in source.rglob("*"))
    # relative paths are taken from the first root (the workspace)
    r = c.post("/projects/p/images/import", json={"path": "p/source/p0.png"})
    assert r.status_code == 201 and r.json()["copied"] == [] and r.json()["duplicates"][0]["duplicate_of"] == "p0.png"
    assert snapshot(env["outside"]) == outside_before


def test_uploads_names_zips_and_limits(env):
    c, ws, tmp = env["client"], env["ws"], env["tmp"]
    source = ws / "p" / "source"
    tree_outside = snapshot(tmp, skip=("ws",))
    files = [("files", ("../../evil.png", _png((1, 1, 1)), "image/png")),
             ("files", ("..\\..\\evil2.png", _png((2, 2, 2)), "image/png")),
             ("files", ("/abs/evil3.png", _png((3, 3, 3)), "image/png")),
             ("files", ("run.sh", b"#!/bin/sh\nrm -rf /\n", "text/x-sh")),
             ("files", ("IMG_0001.MOV", b"\0\0\0\x14ftypqt  ", "video/quicktime"))]
    r = c.post("/projects/p/images", files=files)
    assert r.status_code == 201, r.text
    assert sorted(r.json()["copied"]) == ["evil.png", "evil2.png", "evil3.png"]
    assert [x["file"] for x in r.json()["rejected"]] == ["run.sh", "IMG_0001.MOV"]
    sh, mov = r.json()["rejected"]
    assert "not an image" in sh["reason"] and mov["reason"].startswith("a video")
    # zip slip, absolute and symlink members are refused; the rest is imported
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("ok/z.png", _png((4, 4, 4)))
        zf.writestr("../../../zipslip.png", _png())
        zf.writestr("/abs.png", _png())
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    r = c.post("/projects/p/images", files=[("files", ("a.zip", zbuf.getvalue(), "application/zip"))])
    assert r.status_code == 201, r.text
    assert r.json()["copied"] == ["ok/z.png"] and len(r.json()["rejected"]) == 3
    assert not any("zipslip" in p.name or p.name in ("abs.png", "link.png") for p in tmp.rglob("*"))
    assert not any(p.is_symlink() for p in source.rglob("*"))
    # too many images for the project (limit 7, it has 3 at the top): refused before anything is copied
    before = snapshot(source)
    r = c.post("/projects/p/images", files=[("files", (f"n{i}.png", _png(), "image/png")) for i in range(5)])
    assert r.status_code == 413 and "too many images" in r.json()["error"]
    assert snapshot(source) == before
    # a request larger than the upload limit is refused from its Content-Length
    r = c.post("/projects/p/images", files=[("files", ("big.png", b"\0" * 400_000, "image/png"))])
    assert r.status_code == 413
    # a zip that declares more unpacked bytes than allowed
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("huge.png", b"\0" * 3_000_000)
    r = c.post("/projects/p/images", files=[("files", ("bomb.zip", zbuf.getvalue(), "application/zip"))])
    assert r.status_code == 413 and "unpacks to" in r.json()["error"]
    # a JSON body over its limit
    r = c.post("/projects/p/captions/bulk", json={"action": "add", "tags": ["x" * 100] * 300})
    assert r.status_code == 413
    assert snapshot(source) == before
    assert snapshot(tmp, skip=("ws",)) == tree_outside
    assert not [p for p in ws.iterdir() if p.name.startswith(".upload-")]  # temporary folders removed


def test_uploads_are_checked_on_arrival_and_exact_duplicates_skipped(env):
    """#28 over HTTP: a multipart upload with an empty file, a text file named .jpg, a truncated JPEG and
    duplicates adds the good image, names each refused file with its reason and each skipped duplicate,
    and answers the project's new count; the same upload again adds nothing (no ``_2`` copies)."""
    from PIL import Image

    c, ws = env["client"], env["ws"]
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (10, 200, 30)).save(buf, format="JPEG", quality=95)
    jpeg = buf.getvalue()
    good = _png((7, 70, 170), size=32)
    files = [("files", ("good.png", good, "image/png")),
             ("files", ("twin.png", good, "image/png")),
             ("files", ("empty.png", b"", "image/png")),
             ("files", ("notes.jpg", b"just some text", "image/jpeg")),
             ("files", ("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"))]
    r = c.post("/projects/p/images", files=files)
    assert r.status_code == 201, r.text
    rep = r.json()
    assert rep["copied"] == ["good.png"], rep
    reasons = {x["file"]: x["reason"] for x in rep["rejected"]}
    assert reasons == {"empty.png": "empty file (0 bytes)", "notes.jpg": "not an image (format not recognised)",
                       "cut.jpg": reasons.get("cut.jpg", "")} and reasons["cut.jpg"].startswith("truncated file")
    assert [(d["file"], d["duplicate_of"]) for d in rep["duplicates"]] == [("twin.png", "good.png")]
    assert rep["source_images"] == 1
    assert c.get("/projects/p/images", params={"where": "source"}).json()["images"] == ["good.png"]
    r = c.post("/projects/p/images", files=files[:1])
    assert r.status_code == 201 and r.json()["copied"] == [] and r.json()["source_images"] == 1
    assert "already in the project" in r.json()["duplicates"][0]["reason"]
    assert sorted(p.name for p in (ws / "p" / "source").iterdir()) == ["good.png"]


def test_bearer_token_is_required_everywhere(env):
    url = env["server"].url + env["prefix"]
    for path in ("/projects", "/info", "/jobs", "/nope", "/projects/p/outputs/ok.safetensors"):
        r = httpx.get(url + path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.text)
        assert r.json()["error"] == "authentication required"
        assert httpx.get(url + path, headers={"Authorization": "Bearer wrong-token-123"}).status_code == 401
        assert httpx.get(url + path, auth=("user", TOKEN)).status_code == 401  # Basic is not the token
    r = httpx.post(url + "/projects", json={"name": "q"})
    assert r.status_code == 401 and not (env["ws"] / "q").exists()
    assert env["client"].get("/projects/p/outputs/ok.safetensors").content == b"not really a lora"


def test_errors_are_json_4xx_without_traceback_and_nan_is_null(env, monkeypatch):
    c, service = env["client"], env["service"]
    checks = [
        (c.get("/projects/nope"), 404, "no project"),
        (c.get("/projects/nope/images"), 404, "no project"),  # the dataset folder of a missing project
        (c.get("/projects/%25%C3%80/images"), 400, "invalid project name"),  # schemathesis found this one
        (c.get("/projects/nope/captions"), 404, "no project"),
        (c.post("/projects", json={"name": "../x"}), 400, "invalid project name"),
        (c.post("/projects", json={"name": "p"}), 409, "already exists"),
        (c.post("/projects", content=b"{not json", headers={"content-type": "application/json"}), 422, ""),
        (c.post("/projects", json={"name": "q", "colour": 1}), 422, "colour"),
        (c.post("/projects/p/train", json={"optimizer": "Adamw"}), 422, "optimizer"),
        (c.post("/projects/p/train", json={"rank": 0}), 422, "rank"),
        (c.post("/projects/p/train", content=b'{"seed": NaN}', headers={"content-type": "application/json"}), 422, ""),
        (c.post("/projects/p/train", content=b'{"noise_offset": NaN}', headers={"content-type": "application/json"}),
         422, ""),
        (c.post("/projects/p/generate", content=b'{"prompts": ["a"], "weight": Infinity}',
                headers={"content-type": "application/json"}), 422, ""),
        (c.post("/projects/p/generate", json={"prompts": ["a"], "lora": "missing.safetensors"}), 404, ""),
        (c.post("/projects/p/generate", json={"prompts": ["a <lora:missing:1>"]}), 404, ""),
        (c.post("/projects/p/generate", json={"prompts": ["a"] * 20}), 400, ""),
        (c.post("/projects/p/captions/bulk", json={"action": "add", "tags": []}), 400, "no tags"),
        (c.post("/projects/p/captions/bulk", json={"action": "add", "tags": ["x"]}), 404, ""),  # no dataset yet
        (c.post(f"/jobs/{env['job']}/resume"), 409, ""),
        (c.get("/jobs/nope"), 404, "no job"),
        (c.put("/projects/p"), 405, ""),
    ]
    for r, status, text in checks:
        assert r.status_code == status, (r.request.url, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error", "hint"} and text in body["error"], body
        assert "Traceback" not in r.text
    # an unexpected exception: 500 with the exception's type only, no message, no traceback
    monkeypatch.setattr(service, "projects", lambda: (_ for _ in ()).throw(RuntimeError("secret detail")))
    r = c.get("/projects")
    assert r.status_code == 500 and r.json()["error"] == "internal error (RuntimeError)"
    assert "secret detail" not in r.text and "Traceback" not in r.text
    # NaN from a job (progress, result) and from a log written by anyone: null, never a 500
    gate = threading.Event()

    def job(ctx):
        ctx.progress({"step": 1, "total": 4, "loss": float("nan"), "eta": float("inf")})
        gate.wait(10)
        return {"loss": float("nan")}

    jid = service.runner.submit("test", job, config={"project": "p"}, parent=service.project("p").jobs)
    for _ in range(100):
        if (service.runner.get(jid) or {}).get("progress"):
            break
        threading.Event().wait(0.05)
    r = c.get(f"/jobs/{jid}")
    assert r.status_code == 200, r.text
    st = r.json()
    assert st["progress"]["loss"] is None and st["percent"] == 25.0 and st["project"] == "p"
    gate.set()
    service.runner.wait(jid, 10)
    assert c.get(f"/jobs/{jid}").json()["result"] == {"loss": None}
    (service.runner.job_dir(jid) / "log.jsonl").write_text('{"step": 1, "loss": NaN}\n{"step": 2, "loss": 0.5}\n')
    r = c.get(f"/jobs/{jid}/log")
    assert r.status_code == 200 and r.json()["records"] == [{"step": 1, "loss": None}, {"step": 2, "loss": 0.5}]


def test_a_tagger_that_cannot_run_is_refused_before_any_job(env):
    """An unknown or unavailable tagger is a 400 on the POST that names what is missing, not a 202 and a
    failed job later; nothing is queued. A tagger that can run still gets its 202."""
    c, service = env["client"], env["service"]
    empty = env["ws"] / "no-wd14-model"
    empty.mkdir()
    jobs_before = {j["id"] for j in c.get("/jobs").json()}
    for r, text, hint in [
        (c.post("/projects/p/tag", json={"tagger": "wd14", "model_dir": str(empty)}), "not available", "install"),
        (c.post("/projects/p/tag", json={"tagger": "deepbooru"}), "unknown tagger", "inside the WebUI"),
        (c.post("/projects/p/tag", json={"tagger": "none"}), "no tagger chosen", "toy"),
        (c.post("/projects/p/preprocess", json={"prepare": {"tagger": "wd14"}, "tag": {"model_dir": str(empty)}}),
         "not available", "install"),
    ]:
        assert r.status_code == 400, (r.request.url, r.status_code, r.text)
        assert text in r.json()["error"] and hint in r.json()["hint"], r.json()
    assert str(empty) in c.post("/projects/p/tag", json={"tagger": "wd14", "model_dir": str(empty)}).json()["error"]
    assert {j["id"] for j in c.get("/jobs").json()} == jobs_before
    r = c.post("/projects/p/tag", json={"tagger": "toy"})
    assert r.status_code == 202, r.text
    assert service.runner.wait(r.json()["job"], 60)["status"] in ("finished", "failed")  # (no dataset yet)


def test_serve_refuses_an_open_address_without_a_token(monkeypatch, tmp_path, capsys):
    from lora_trainer import cli
    from lora_trainer.api.security import is_loopback

    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost")] == [True] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.com", "")] == [False] * 5
    monkeypatch.delenv("LORA_TRAINER_TOKEN", raising=False)
    ran = []
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: ran.append((app, host, port)))
    ws = str(tmp_path / "ws")
    assert cli.main(["serve", "--host", "0.0.0.0", "--workspace", ws]) == 2
    assert "--token" in capsys.readouterr().err and ran == []
    assert cli.main(["serve", "--host", "0.0.0.0", "--token", "short", "--workspace", ws]) == 2
    assert cli.main(["serve", "--workspace", ws, "--root", str(tmp_path / "missing")]) == 2
    assert cli.main(["serve", "--port", "7999", "--workspace", ws]) == 0
    app, host, port = ran[-1]
    assert (host, port) == ("127.0.0.1", 7999)
    monkeypatch.setenv("LORA_TRAINER_TOKEN", TOKEN)
    assert cli.main(["serve", "--host", "0.0.0.0", "--workspace", ws]) == 0
    app, host, _ = ran[-1]
    assert host == "0.0.0.0"
    from lora_trainer.api.serve import BackgroundServer

    with BackgroundServer(app) as srv:  # the app built for the open address requires the token
        assert httpx.get(srv.url + "/lora-trainer/v1/projects").status_code == 401
        r = httpx.get(srv.url + "/lora-trainer/v1/projects", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json() == []
