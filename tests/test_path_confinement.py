"""Nothing follows a symbolic link out of the workspace or the configured roots (issue 28, item 1).

- The rule itself (``lora_trainer.paths``) on real files and links.
- EVERY API route, table-driven over the router's own routes (a new route without a case fails
  ``test_every_route_has_a_case``), against a workspace holding links that lead out: a project folder, a
  project's subfolder, a job folder, an image, an output, a job file. Each attempt is a 4xx JSON (or a listing
  without the link), never the outside file's content, and nothing outside changes.
- The standalone tab's gradio ``/file=`` route, over real HTTP with the real gradio app on 127.0.0.1.
- The CLI: ``--input``/``--data``/``--output-dir`` with a link leading out → exit 2, one line.
No model is loaded: these run in both CI profiles.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
from conftest import flat_routes

SECRET = b"TOPSECRET-outside-the-workspace"


def _png(color=(200, 30, 30), size=16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def snapshot(root: Path) -> dict:
    """Every path under ``root`` (links not followed) with its size, mtime and content digest."""
    import hashlib

    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return out


def make_outside(tmp: Path) -> Path:
    """A folder outside the workspace that looks like a project, a job and a photo folder."""
    out = tmp / "outside"
    (out / "proj").mkdir(parents=True)
    for sub in ("source", "dataset/30_zkw", "jobs", "output"):
        (out / "proj" / sub).mkdir(parents=True)
    (out / "proj" / "project.json").write_text(json.dumps({"name": "evil", "trigger": "zkw", "repeats": 30}))
    (out / "proj" / "source" / "a.png").write_bytes(_png())
    (out / "proj" / "dataset" / "30_zkw" / "a.png").write_bytes(_png())
    (out / "proj" / "dataset" / "30_zkw" / "a.txt").write_text("zkw, secret")
    (out / "proj" / "output" / "x.safetensors").write_bytes(SECRET)
    (out / "empty").mkdir()
    (out / "qsrc").mkdir()
    (out / "qsrc" / "b.png").write_bytes(_png())
    (out / "secret.txt").write_bytes(SECRET)
    (out / "secret.png").write_bytes(_png((1, 2, 3)) + SECRET)
    (out / "evjob").mkdir()
    (out / "evjob" / "state.json").write_text(json.dumps(
        {"id": "evjob", "kind": "train", "status": "failed", "config": {"project": "p", "train": {}},
         "created": 1.0, "progress": {}}))
    (out / "evjob" / "log.jsonl").write_text(json.dumps({"step": 1, "secret": SECRET.decode()}) + "\n")
    (out / "evjob" / "leak.json").write_bytes(SECRET)
    (out / "evjob" / "state").mkdir()
    (out / "evjob" / "state" / "latest.json").write_text("{}")
    return out


# ------------------------------------------------------------------------------------------ the rule

def test_the_rule_in_paths(tmp_path):
    from lora_trainer import paths
    from lora_trainer.errors import UserError

    ws, out = tmp_path / "ws", make_outside(tmp_path)
    (ws / "inner").mkdir(parents=True)
    (ws / "inner" / "f.txt").write_text("ok")
    os.symlink(out, ws / "out")
    os.symlink(ws / "inner", ws / "alias")                      # a link that stays inside: followed
    os.symlink(out / "secret.txt", ws / "inner" / "s.txt")
    assert paths.confine(ws / "alias" / "f.txt", [ws]) == (ws / "inner" / "f.txt").resolve()
    assert paths.confine(ws / "new" / "file", [ws]) == (ws / "new" / "file").resolve()  # need not exist
    for bad in (ws / "out", ws / "out" / "secret.txt", ws / "out" / "new.txt", ws / "inner" / "s.txt", tmp_path):
        with pytest.raises(paths.PathRefused) as e:
            paths.confine(bad, [ws])
        assert e.value.status == 403 and isinstance(e.value, UserError)
    assert paths.child(ws / "inner", "f.txt") == (ws / "inner" / "f.txt").resolve()
    with pytest.raises(paths.PathRefused) as e:
        paths.child(ws / "inner", "s.txt")
    assert e.value.status == 404
    assert [p.name for p in paths.entries(ws, [ws])] == ["alias", "inner"]  # ("out" is not listed)
    assert [p.name for p in paths.entries(ws / "inner", [ws])] == ["f.txt"]
    assert sorted(p.name for p in paths.links_leading_out(ws)) == ["out", "s.txt"]
    with pytest.raises(paths.PathRefused, match="symbolic link leading outside"):
        paths.check_tree(ws, "--data")
    (ws / "inner2").mkdir()
    os.symlink(ws / "inner" / "f.txt", ws / "inner2" / "f.txt")
    paths.check_tree(ws / "inner2", "--data", [ws])  # (a link inside the roots is fine)
    before = snapshot(out)
    paths.remove_tree(ws / "out", [ws])             # a link loses the link only
    paths.remove_tree(ws / "alias", [ws])
    assert not (ws / "out").exists() and (ws / "inner" / "f.txt").is_file() and snapshot(out) == before
    paths.remove_tree(ws / "inner", [ws])           # (rmtree unlinks s.txt, never its target)
    assert not (ws / "inner").exists() and (out / "secret.txt").read_bytes() == SECRET
    with pytest.raises(paths.PathRefused):
        paths.remove_tree(out, [ws])
    assert out.is_dir()


# ------------------------------------------------------------------------------------------ the API

@pytest.fixture()
def api(tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from lora_trainer.api import PREFIX, create_app
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service

    out = make_outside(tmp_path)
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink(out / "proj", ws / "evil")              # a project folder leading out
    os.symlink(out / "empty", ws / "fresh")            # a name POST /projects would create files through
    (ws / "q").mkdir()                                 # a project whose source/ leads out
    (ws / "q" / "project.json").write_text(json.dumps({"name": "q", "trigger": "zkw", "repeats": 30}))
    for sub in ("dataset", "jobs", "output"):
        (ws / "q" / sub).mkdir()
    os.symlink(out / "qsrc", ws / "q" / "source")
    svc = Service(ws)
    svc.create_project("p", trigger="zkw")
    p = ws / "p"
    (p / "source" / "ok.png").write_bytes(_png())
    os.symlink(out / "secret.png", p / "source" / "leak.png")
    (p / "dataset" / "30_zkw").mkdir()
    (p / "dataset" / "30_zkw" / "ok.png").write_bytes(_png())
    (p / "dataset" / "30_zkw" / "ok.txt").write_text("zkw, red")
    os.symlink(out / "secret.png", p / "dataset" / "30_zkw" / "leak.png")
    (p / "dataset" / "30_zkw" / "ok2.png").write_bytes(_png())
    os.symlink(out / "secret.txt", p / "dataset" / "30_zkw" / "ok2.txt")     # a caption leading out
    (p / "output" / "ok.safetensors").write_bytes(b"not really a lora")
    os.symlink(out / "secret.txt", p / "output" / "evil.safetensors")
    job = svc.runner.submit("test", lambda ctx: {"ok": True}, config={"project": "p"}, parent=p / "jobs")
    svc.runner.wait(job, 30)
    os.symlink(out / "secret.png", svc.runner.job_dir(job) / "leak.png")
    os.symlink(out / "evjob", p / "jobs" / "evjob")    # a job folder leading out, found on restart
    svc.runner.shutdown()
    service = Service(ws)                              # restarted: the runner lists jobs from disk
    app = create_app(service, roots=[ws])
    server = BackgroundServer(app).start()
    client = httpx.Client(base_url=server.url + PREFIX, timeout=30)
    yield {"client": client, "service": service, "app": app, "ws": ws, "out": out, "job": job, "prefix": PREFIX}
    client.close()
    server.stop()
    service.runner.shutdown()


def listing_without(*hidden, key="name", field=None):
    """An expectation for a listing route: 200, and none of ``hidden`` in it."""
    def check(r):
        assert r.status_code == 200, r.text
        data = r.json()
        items = data if field is None else data[field]
        names = [x[key] if isinstance(x, dict) else x for x in items]
        leaked = [h for h in hidden if h in names]
        assert not leaked, (r.request.url, leaked, names)
    return check


def refused(r):
    assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text)
    assert set(r.json()) == {"error", "hint"}, r.text


def answered(r):
    assert r.status_code == 200, r.text


def cases(job: str) -> dict:
    """(method, route) → [(url, kwargs for httpx, expectation)]. Every route of the router has an entry."""
    png = {"files": [("files", ("n.png", _png(), "image/png"))]}
    by_name = {  # routes under /projects/{name}: each tried on the linked project 'evil'; more below
        ("GET", "/projects/{name}"): {},
        ("PATCH", "/projects/{name}"): {"json": {"trigger": "x"}},
        ("DELETE", "/projects/{name}"): {},
        ("GET", "/projects/{name}/train-config"): {},
        ("GET", "/projects/{name}/images"): {"params": {"where": "source"}},
        ("POST", "/projects/{name}/images"): png,
        ("POST", "/projects/{name}/images/import"): {"json": {"path": "p/source"}},
        ("POST", "/projects/{name}/preprocess"): {"json": {}},
        ("POST", "/projects/{name}/tag"): {"json": {"tagger": "toy"}},
        ("POST", "/projects/{name}/estimate"): {"json": {}},
        ("POST", "/projects/{name}/train"): {"json": {}},
        ("POST", "/projects/{name}/generate"): {"json": {"prompts": ["a"]}},
        ("GET", "/projects/{name}/captions"): {},
        ("PATCH", "/projects/{name}/captions"): {"json": {"captions": {"a.png": ["x"]}}},
        ("POST", "/projects/{name}/captions/bulk"): {"json": {"action": "add", "tags": ["x"]}},
        ("GET", "/projects/{name}/captions/suggestions"): {},
        ("POST", "/projects/{name}/captions/suggestions/apply"): {"json": {}},
        ("GET", "/projects/{name}/outputs"): {},
        ("GET", "/projects/{name}/disk"): {},
        ("POST", "/projects/{name}/cleanup"): {"json": {"what": ["caches", "state"]}},
    }
    table = {k: [(k[1].replace("{name}", n), kw, refused) for n in ("evil", "q")] for k, kw in by_name.items()}
    table[("GET", "/projects/{name}/images")] += [
        ("/projects/p/images", {"params": {"where": "source"}}, listing_without("leak.png", field="images")),
        ("/projects/p/images", {}, listing_without("leak.png", field="images"))]
    table[("POST", "/projects/{name}/images/import")] += [
        ("/projects/p/images/import", {"json": {"path": "evil/source"}}, refused),
        ("/projects/p/images/import", {"json": {"path": "q/source/b.png"}}, refused)]
    table[("POST", "/projects/{name}/preprocess")] += [
        ("/projects/p/preprocess", {"json": {"prepare": {"boxes": "evil/project.json"}}}, refused)]
    table[("POST", "/projects/{name}/generate")] += [
        ("/projects/p/generate", {"json": {"prompts": ["a"], "lora": "evil.safetensors"}}, refused),
        ("/projects/p/generate", {"json": {"prompts": ["a <lora:evil:1>"]}}, refused)]
    table[("GET", "/projects/{name}/captions")] += [("/projects/p/captions", {}, listing_without(
        "leak.png", key="image", field="images"))]  # (and ok2's linked caption is not read: no SECRET)
    table[("GET", "/projects/{name}/outputs")] += [("/projects/p/outputs", {}, listing_without("evil.safetensors",
                                                                                             field="files"))]
    table.update({
        ("GET", "/info"): [("/info", {}, answered)],
        ("GET", "/samplers"): [("/samplers", {}, answered)],
        ("GET", "/models"): [("/models", {}, answered)],
        ("POST", "/models/{model_id}/download"): [("/models/evil/download", {}, refused),
                                                  ("/models/..%2Fevil/download", {}, refused)],
        ("GET", "/projects"): [("/projects", {}, listing_without("evil", "q", "fresh"))],
        ("POST", "/projects"): [("/projects", {"json": {"name": n}}, refused) for n in ("fresh", "evil")],
        ("GET", "/projects/{name}/images/{image}"): [
            ("/projects/evil/images/a.png", {"params": {"where": "source"}}, refused),
            ("/projects/q/images/b.png", {"params": {"where": "source"}}, refused),
            ("/projects/p/images/leak.png", {"params": {"where": "source"}}, refused),
            ("/projects/p/images/leak.png", {}, refused)],
        ("DELETE", "/projects/{name}/images/{image}"): [
            ("/projects/evil/images/a.png", {"params": {"where": "source"}}, refused),
            ("/projects/q/images/b.png", {"params": {"where": "source"}}, refused),
            ("/projects/p/images/leak.png", {"params": {"where": "source"}}, refused)],
        ("GET", "/projects/{name}/outputs/{file}"): [
            ("/projects/evil/outputs/x.safetensors", {}, refused),
            ("/projects/p/outputs/evil.safetensors", {}, refused)],
        ("POST", "/projects/{name}/outputs/{file}/publish"): [
            ("/projects/evil/outputs/x.safetensors/publish", {}, refused),
            ("/projects/p/outputs/evil.safetensors/publish", {}, refused)],
        ("GET", "/jobs"): [("/jobs", {}, listing_without("evjob", key="id")),
                           ("/jobs", {"params": {"project": "p"}}, listing_without("evjob", key="id"))],
        ("GET", "/jobs/{job_id}"): [("/jobs/evjob", {}, refused)],
        ("GET", "/jobs/{job_id}/log"): [("/jobs/evjob/log", {}, refused)],
        ("POST", "/jobs/{job_id}/cancel"): [("/jobs/evjob/cancel", {}, refused)],
        ("POST", "/jobs/{job_id}/resume"): [("/jobs/evjob/resume", {}, refused)],
        ("GET", "/jobs/{job_id}/files"): [("/jobs/evjob/files", {}, refused),
                                          (f"/jobs/{job}/files", {}, listing_without("leak.png", field="files"))],
        ("GET", "/jobs/{job_id}/files/{file}"): [("/jobs/evjob/files/leak.json", {}, refused),
                                                 (f"/jobs/{job}/files/leak.png", {}, refused)],
    })
    return table




def router_routes(app, prefix: str) -> set:
    out = set()
    for r in flat_routes(app.routes):
        path = getattr(r, "path", "")
        if not path.startswith(prefix + "/") or "{rest" in path or path.startswith(prefix + "/openapi") \
                or path.startswith(prefix + "/docs"):
            continue
        for m in getattr(r, "methods", ()) or ():
            if m != "HEAD":
                out.add((m, re.sub(r":path}", "}", path[len(prefix):])))
    return out


def test_every_route_has_a_case(api):
    """A new route fails here until the table below says how a link leading out is tried on it."""
    assert router_routes(api["app"], api["prefix"]) == set(cases(api["job"]))


def test_no_route_follows_a_link_out_of_the_workspace(api):
    c, out, ws = api["client"], api["out"], api["ws"]
    before = snapshot(out)
    tried = 0
    for (method, _route), attempts in cases(api["job"]).items():
        for url, kw, expect in attempts:
            r = c.request(method, url, **kw)
            expect(r)
            assert r.status_code < 500, (method, url, r.status_code, r.text)
            assert SECRET not in r.content and b"Traceback" not in r.content, (method, url, r.text)
            tried += 1
    assert tried > 50
    assert snapshot(out) == before                      # nothing outside was written, deleted or touched
    assert os.path.islink(ws / "evil") and os.path.islink(ws / "fresh") and os.path.islink(ws / "q" / "source")
    assert not (out / "empty" / "project.json").exists()
    # a link that stays inside the workspace is followed: a second name for project p works
    os.symlink(ws / "p", ws / "alias")
    r = c.get("/projects/alias/images", params={"where": "source"})
    assert r.status_code == 200 and r.json()["images"] == ["ok.png"], r.text
    r = c.delete("/projects/alias")                     # deleting it removes the link, not p
    assert r.status_code == 200, r.text
    assert not os.path.lexists(ws / "alias") and (ws / "p" / "project.json").is_file()
    # the real project still works through every listing
    assert c.get("/projects/p/outputs").json()["files"][0]["name"] == "ok.safetensors"
    assert c.get("/projects/p").json()["outputs"] == ["ok.safetensors"]
    assert c.get("/projects/p").json()["source_images"] == 1


# ------------------------------------------------------------------------------------------ the tab's /file=

def test_the_standalone_tab_does_not_serve_a_link_leading_out(tmp_path, monkeypatch):
    """Gradio 3.41's ``/file=`` checks the lexical path against ``allowed_paths`` and the working directory
    and then follows links; the guard in front of it refuses a file whose resolved path is outside."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("gradio")
    from lora_trainer.ui import standalone

    out = make_outside(tmp_path)
    ws = tmp_path / "ws"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-tmp"))
    service = standalone.make_service(str(ws))
    service.create_project("p", trigger="zkw")
    (ws / "p" / "source" / "ok.png").write_bytes(_png())
    os.symlink(out / "secret.txt", ws / "leak.txt")
    os.symlink(out / "secret.png", ws / "p" / "source" / "leak.png")
    os.symlink(out, ws / "outdir")
    os.symlink(out / "secret.txt", tmp_path / "cwd-leak.txt")   # in the working directory, not the workspace
    app = standalone.page(service, {"lang": "en", "host": "standalone", "family": "test"})
    try:
        standalone.launch(app, "127.0.0.1", None, str(ws), block=False)
        url = app.local_url.rstrip("/")
        wsr = ws.resolve()
        ok = httpx.get(f"{url}/file={wsr}/p/project.json", timeout=30)
        assert ok.status_code == 200 and b'"trigger"' in ok.content, ok.text   # the route itself works
        tmp_copy = standalone.gradio_temp_dir() / "lt-test" / "copy.png"   # gradio's own copies still served
        tmp_copy.parent.mkdir(parents=True, exist_ok=True)
        tmp_copy.write_bytes(_png())
        assert httpx.get(f"{url}/file={tmp_copy}", timeout=30).status_code == 200
        for target in (f"{wsr}/leak.txt", f"{wsr}/p/source/leak.png", f"{wsr}/outdir/secret.txt",
                       "ws/leak.txt", "ws/outdir/secret.png", "cwd-leak.txt", str(out / "secret.txt")):
            for route in ("/file=", "/file/"):
                r = httpx.get(url + route + target, timeout=30)
                assert 400 <= r.status_code < 500, (route, target, r.status_code)
                assert SECRET not in r.content, (route, target)
    finally:
        app.close()
        service.runner.shutdown()


def test_ui_refuses_an_open_address_without_a_password(monkeypatch, tmp_path, capsys):
    """``ui --host 0.0.0.0`` answers exit 2 without --auth (as ``serve`` does without --token); with
    --auth the login goes to gradio's ``auth=``."""
    pytest.importorskip("gradio")
    from lora_trainer import cli
    from lora_trainer.ui import standalone

    launched = []
    monkeypatch.setattr(standalone, "page", lambda service, info: "page")
    monkeypatch.setattr(standalone, "launch", lambda app, host, port, ws, block=True, auth=None:
                        launched.append((host, auth)))
    monkeypatch.delenv(standalone.AUTH_ENV, raising=False)
    ws = str(tmp_path / "ws")
    for host in ("0.0.0.0", "::", "192.168.1.20"):
        assert cli.main(["ui", "--host", host, "--workspace", ws]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--auth" in err and host in err, err
    assert cli.main(["ui", "--host", "0.0.0.0", "--auth", "me:short", "--workspace", ws]) == 2
    assert "too short" in capsys.readouterr().err
    assert cli.main(["ui", "--host", "0.0.0.0", "--auth", "nocolon", "--workspace", ws]) == 2
    assert launched == []
    assert cli.main(["ui", "--host", "0.0.0.0", "--auth", "me:long-enough-pw", "--workspace", ws]) == 0
    assert launched[-1] == ("0.0.0.0", [("me", "long-enough-pw")])
    monkeypatch.setenv(standalone.AUTH_ENV, "a:password-1,b:password-2")
    assert cli.main(["ui", "--host", "0.0.0.0", "--workspace", ws]) == 0
    assert launched[-1] == ("0.0.0.0", [("a", "password-1"), ("b", "password-2")])
    monkeypatch.delenv(standalone.AUTH_ENV)
    assert cli.main(["ui", "--workspace", ws]) == 0      # loopback: no password needed
    assert launched[-1] == ("127.0.0.1", [])


def test_ui_with_auth_needs_the_login_over_http(tmp_path):
    """With --auth, gradio's routes (the file route included) answer only after the login."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("gradio")
    from lora_trainer.ui import standalone

    ws = tmp_path / "ws"
    service = standalone.make_service(str(ws))
    service.create_project("p", trigger="zkw")
    app = standalone.page(service, {"lang": "en", "host": "standalone", "family": "test"})
    try:
        standalone.launch(app, "127.0.0.1", None, str(ws), block=False, auth=[("me", "long-enough-pw")])
        url = app.local_url.rstrip("/")
        target = f"{url}/file={ws.resolve()}/p/project.json"
        assert httpx.get(target, timeout=30).status_code in (401, 403)
        with httpx.Client(timeout=30) as c:
            assert c.post(url + "/login", data={"username": "me", "password": "wrong-password"}).status_code >= 400
            assert c.post(url + "/login", data={"username": "me", "password": "long-enough-pw"}).status_code == 200
            r = c.get(target)
            assert r.status_code == 200 and b'"trigger"' in r.content
    finally:
        app.close()
        service.runner.shutdown()


# ------------------------------------------------------------------------------------------ the CLI

def _one_line_exit_2(capsys, argv):
    from lora_trainer import cli

    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, code, err)
    assert "\n" not in err and "symbolic link leading outside" in err, err
    return err


def test_cli_refuses_a_link_leading_out_of_its_folders(tmp_path, capsys):
    out = make_outside(tmp_path)
    before = snapshot(out)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "ok.png").write_bytes(_png())
    os.symlink(out / "secret.png", photos / "leak.png")
    dest = tmp_path / "dest"
    err = _one_line_exit_2(capsys, ["prepare", "--input", str(photos), "--output-dir", str(dest),
                                    "--crop", "center", "--size", "64", "--background", "none"])
    assert "--input" in err and "leak.png" in err
    assert not dest.exists()                            # refused before anything ran
    _one_line_exit_2(capsys, ["tags", "freq", "--input", str(photos)])
    _one_line_exit_2(capsys, ["train", "--data", str(photos), "--max-steps", "1"])
    # an output folder whose jobs/ leads out: the job folders would be written there
    good = tmp_path / "good"
    good.mkdir()
    (good / "ok.png").write_bytes(_png())
    dest2 = tmp_path / "dest2"
    dest2.mkdir()
    os.symlink(out / "empty", dest2 / "jobs")
    err = _one_line_exit_2(capsys, ["prepare", "--input", str(good), "--output-dir", str(dest2),
                                    "--crop", "center", "--size", "64", "--background", "none"])
    assert "--output-dir" in err
    _one_line_exit_2(capsys, ["train", "--data", str(good), "--output-dir", str(dest2), "--max-steps", "1"])
    assert snapshot(out) == before
