"""The model store against a real HTTP server on 127.0.0.1 that answers the hub's file routes (tests/
hub_server.py), with HF_ENDPOINT pointing at it: progress, resume after a dropped connection and after a
killed process, hash refusal, the offline error within 5 s, the models command, the WebUI's folders, and the
tagger and background steps running on what was downloaded."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from hub_server import HubDouble
from lora_trainer import model_store as store
from lora_trainer.errors import UserError
from prepare_fixtures import has, needs_rembg
from webui_double.fixture import webui_double  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]
VIT = "wd-vit-tagger-v3"
needs_onnx = pytest.mark.skipif(not has("onnxruntime", "onnx"), reason="needs onnxruntime and onnx (standalone)")


@pytest.fixture(params=["library", "fallback"])
def hub(request, tmp_path, monkeypatch):
    """The double, with the store on one of its two paths: ``huggingface_hub`` ("library", where it is
    installed — both CI profiles have it) or its own urllib client ("fallback")."""
    if request.param == "library":
        pytest.importorskip("huggingface_hub")
        monkeypatch.delenv("LORA_TRAINER_NO_HF_HUB", raising=False)
    else:
        monkeypatch.setenv("LORA_TRAINER_NO_HF_HUB", "1")
    server = HubDouble()
    server.path = request.param
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("LORA_TRAINER_REMBG_URL", server.url + "/release")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("LORA_TRAINER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    monkeypatch.setattr(store, "HOST_MODELS_DIR", [])
    yield server
    server.close()


def library_resumes(hub) -> bool:
    """Whether a killed or cancelled download leaves a partial file the next run resumes: the store's own
    client does; huggingface_hub 0.3x resumes its ``.incomplete`` file, 1.x/2.x writes a fresh temporary
    file per attempt and deletes it when the download fails (it resumes only within one call)."""
    if hub.path == "fallback":
        return True
    import inspect

    from huggingface_hub import file_download

    return "uuid" not in inspect.getsource(file_download._download_to_tmp_and_move)


def big(hub) -> int:
    """A model size that leaves a partial file midway: the library writes in 10 MB chunks."""
    return 25_000_000 if hub.path == "library" else 4_000_000


def partial(hub, folder: Path, name: str = "model.onnx") -> Path:
    """Where the store keeps a partial download: ``<name>.part`` (its own client), or the library's
    ``.incomplete`` file in ``<folder>/.download``."""
    if hub.path == "fallback":
        return folder / f"{name}.part"
    from lora_trainer import hub_fetch

    found = hub_fetch.partial_files(folder)
    return found[0] if found else folder / ".download" / "none.incomplete"


def blob(n: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(b"model %d" % seed).digest(n)


def serve_tagger(hub, model: bytes, csv: bytes, model_id: str = VIT) -> None:
    hub.add_hub(f"SmilingWolf/{model_id}", "model.onnx", model, lfs=True)
    hub.add_hub(f"SmilingWolf/{model_id}", "selected_tags.csv", csv, lfs=False)


CSV = b"tag_id,name,category,count\n0,general,9,1\n1,1girl,0,1\n"


def test_download_with_progress_into_the_cache(hub, tmp_path):
    model = blob(3_000_000)
    serve_tagger(hub, model, CSV)
    assert store.find(VIT) is None
    events = []
    folder = store.ensure(VIT, events.append)
    assert folder == tmp_path / "cache" / "models" / "wd14" / VIT
    assert (folder / "model.onnx").read_bytes() == model and (folder / "selected_tags.csv").read_bytes() == CSV
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "selected_tags.csv"]  # no .part left
    dones = [e["done"] for e in events]
    assert dones == sorted(dones) and len(events) >= (2 if hub.path == "library" else 3)  # the library: 10 MB chunks
    assert events[-1]["done"] == events[-1]["total"] == len(model) + len(CSV)
    assert {e["file"] for e in events} == {"model.onnx", "selected_tags.csv"}
    assert ("HEAD", f"/SmilingWolf/{VIT}/resolve/main/model.onnx", "") in hub.requests
    gets = {ua for m, p, ua in hub.agents if m == "GET"}  # the bytes came through huggingface_hub, or not
    assert all(("huggingface_hub" in ua or "hf_hub" in ua) == (hub.path == "library") for ua in gets), gets
    n = len(hub.requests)
    assert store.ensure(VIT) == folder and len(hub.requests) == n  # on disk: no request at all
    assert store.describe(VIT)["downloaded"] and store.describe(VIT)["on_disk"] == len(model) + len(CSV)


def test_a_dropped_connection_resumes_with_a_range_request(hub, tmp_path):
    model = blob(big(hub), 1)
    serve_tagger(hub, model, CSV)
    hub.drop_after = hub_cut = 1_200_000 if hub.path == "fallback" else 12_000_000
    folder = store.target_dir(store.get_spec(VIT))
    try:  # huggingface_hub 1.x/2.x retries at once, from where the connection dropped
        store.ensure(VIT)
        assert hub.path == "library"
    except store.ModelOffline as exc:  # the store's client, huggingface_hub 0.3x: the next run resumes
        assert "broke off" in exc.message
        part = partial(hub, folder)
        assert not (folder / "model.onnx").exists() and 0 < part.stat().st_size <= hub_cut
        store.ensure(VIT)
        assert not part.exists()
    have = int(next(r for m, p, r in hub.requests if m == "GET" and r)[6:-1])
    assert 0 < have <= hub_cut
    assert ("GET", f"/cdn/{hashlib.sha256(model).hexdigest()}", f"bytes={have}-") in hub.requests
    assert hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest() == hashlib.sha256(model).hexdigest()
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "selected_tags.csv"]


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lora_trainer", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_a_killed_download_resumes_and_ends_with_the_right_sha256(hub, tmp_path):
    model = blob(big(hub), 2)
    serve_tagger(hub, model, CSV)
    hub.slow = 0.02  # about 3 MB/s: the process is killed midway
    folder = store.target_dir(store.get_spec(VIT))
    proc = subprocess.Popen([sys.executable, "-m", "lora_trainer", "models", "download", VIT], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (partial(hub, folder).exists() and
                                              partial(hub, folder).stat().st_size > 300_000):
            time.sleep(0.05)
        part = partial(hub, folder)
        assert part.exists(), proc.stderr.read1() if proc.poll() is not None else "no partial file"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if library_resumes(hub):
        have = part.stat().st_size
        assert 0 < have < len(model)
    assert not (folder / "model.onnx").exists()
    hub.slow = 0.0
    r = _cli("models", "download", VIT, env=_env())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1]) == {"downloaded": {VIT: str(folder)}}
    ranges = [rng for m, p, rng in hub.requests if m == "GET" and p.startswith("/cdn/")]
    if library_resumes(hub):
        assert ranges[-1] == f"bytes={have}-"
    assert hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest() == hashlib.sha256(model).hexdigest()
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "selected_tags.csv"]


def test_a_wrong_hash_is_refused_and_nothing_is_left(hub):
    serve_tagger(hub, blob(500_000, 3), CSV)
    hub.add_hub(f"SmilingWolf/{VIT}", "model.onnx", blob(500_000, 3), advertise="ab" * 32)
    folder = store.target_dir(store.get_spec(VIT))
    with pytest.raises(UserError, match="corrupt: its sha256 is .* the published one is abab"):
        store.ensure(VIT)
    assert not (folder / "model.onnx").exists() and not (folder / "model.onnx.part").exists()
    assert store.find(VIT) is None


def test_a_small_files_git_hash_is_checked_too(hub):
    serve_tagger(hub, blob(1000, 4), CSV)
    good = store._expected_hash(store.ModelFile("x", "x"), {"etag": hashlib.sha1(b"blob %d\0" % len(CSV) + CSV)
                                                            .hexdigest()})
    assert good[0] == "git-sha1"
    folder = store.ensure(VIT)
    assert store.file_hash(folder / "selected_tags.csv", "git-sha1") == good[1]


def _assert_clear_offline(exc, folder: Path, url_base: str) -> None:
    text = f"{exc.message} {exc.hint}"
    assert f"{url_base}/SmilingWolf/{VIT}/resolve/main/model.onnx" in text and str(folder) in text
    assert f"models download {VIT}" in text


def test_offline_env_fails_at_once_with_what_to_do(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    serve_tagger(hub, blob(1000), CSV)
    t = time.monotonic()
    with pytest.raises(store.ModelOffline) as e:
        store.ensure(VIT)
    assert time.monotonic() - t < 5 and hub.requests == []
    _assert_clear_offline(e.value, store.target_dir(store.get_spec(VIT)), hub.url)


def test_server_down_fails_within_5_s(hub, monkeypatch):
    url = hub.url
    hub.close()
    t = time.monotonic()
    with pytest.raises(store.ModelOffline, match="cannot reach") as e:
        store.ensure(VIT)
    assert time.monotonic() - t < 5
    _assert_clear_offline(e.value, store.target_dir(store.get_spec(VIT)), url)


def test_a_silent_server_fails_within_5_s(hub, monkeypatch):
    import socket

    quiet = socket.socket()
    quiet.bind(("127.0.0.1", 0))
    quiet.listen(1)  # accepts the connection, never answers
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{quiet.getsockname()[1]}")
        t = time.monotonic()
        with pytest.raises(store.ModelOffline):
            store.ensure(VIT)
        assert time.monotonic() - t < 5
    finally:
        quiet.close()


def test_cancel_keeps_the_partial_file(hub):
    from lora_trainer import hub_fetch
    from lora_trainer.errors import Cancelled

    serve_tagger(hub, blob(big(hub), 5), CSV)
    events = []
    with pytest.raises(Cancelled):
        store.ensure(VIT, events.append, should_stop=lambda: bool(events))
    folder = store.target_dir(store.get_spec(VIT))
    assert store.find(VIT) is None
    if not library_resumes(hub):  # huggingface_hub 1.x/2.x deletes its temporary file
        assert not partial(hub, folder).exists() and not (folder / "model.onnx").exists()
    elif hub.path == "fallback" or hub_fetch.cancels_midfile():
        assert partial(hub, folder).is_file() and not (folder / "model.onnx").exists()
    else:  # huggingface_hub 0.3x: Cancel takes effect when the current file ends
        assert (folder / "model.onnx").is_file() and not (folder / "selected_tags.csv").exists()
    store.ensure(VIT)  # resumes
    assert store.find(VIT) == folder


def test_missing_tagger_names_the_download(hub):
    from lora_trainer.tagging.registry import get_tagger

    with pytest.raises(UserError) as e:
        get_tagger("wd-swinv2-tagger-v3")
    assert "models download wd-swinv2-tagger-v3" in e.value.message
    assert f"{hub.url}/SmilingWolf/wd-swinv2-tagger-v3/resolve/main/model.onnx" in e.value.message
    with pytest.raises(UserError, match=f"models download {VIT}"):  # plain wd14 = the default v3 model
        get_tagger("wd14")


def test_models_command_lists_downloads_and_deletes(hub, tmp_path):
    hub.add_release("u2netp.onnx", blob(200_000, 6))
    env = _env()
    r = _cli("models", "list", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rows = {m["id"]: m for m in json.loads(r.stdout)["models"]}
    assert set(rows) >= {VIT, "wd-swinv2-tagger-v3", "wd-eva02-large-tagger-v3", "u2net", "u2netp",
                         "isnet-general-use", "birefnet-portrait", "birefnet-general"}
    assert rows["u2netp"]["folder"] == str(tmp_path / "u2net") and not rows["u2netp"]["downloaded"]
    r = _cli("models", "download", "u2netp", env=env)  # the served bytes are not rembg's file: md5 refused
    assert r.returncode == 2 and "corrupt: its md5" in r.stderr and not (tmp_path / "u2net" / "u2netp.onnx").exists()
    r = _cli("models", "download", "nope", env=env)
    assert r.returncode == 2 and "unknown model 'nope'" in r.stderr
    env["HF_HUB_OFFLINE"] = "1"
    r = _cli("models", "download", "u2netp", env=env)
    assert r.returncode == 2 and f"{hub.url}/release/u2netp.onnx" in r.stderr and str(tmp_path / "u2net") in r.stderr
    (tmp_path / "u2net").mkdir(exist_ok=True)
    (tmp_path / "u2net" / "u2netp.onnx").write_bytes(b"x" * 10)
    r = _cli("models", "list", env=env)
    assert r.returncode == 0 and any(line.startswith("u2netp ") and "downloaded" in line
                                     for line in r.stdout.splitlines())
    r = _cli("models", "delete", "u2netp", env=env)
    assert r.returncode == 0 and not (tmp_path / "u2net" / "u2netp.onnx").exists()


def _with_md5(monkeypatch, model_id: str, data: bytes) -> None:
    """The served test file stands for rembg's, whose published md5 it cannot have."""
    spec = store.CATALOGUE[model_id]
    f = spec.files[0]
    monkeypatch.setitem(store.CATALOGUE, model_id, dataclasses.replace(
        spec, files=(dataclasses.replace(f, md5=hashlib.md5(data).hexdigest()),)))


def test_webui_downloads_land_in_its_models_folders(webui_double, hub, monkeypatch):
    """In the WebUI (the double, through the host adapter) downloads land in models/wd14/<id> and, without
    $U2NET_HOME, models/u2net — where the WebUI's rembg extension keeps them; Reload UI forgets them."""
    from lora_trainer.host import webui
    from lora_trainer.host.env import models_path
    from lora_trainer.prepare.background import model_file
    from lora_trainer.tagging.registry import get_tagger, make_tagger

    monkeypatch.delenv("U2NET_HOME")
    webui.get_service()  # registers the host taggers and folders
    models = models_path()
    serve_tagger(hub, blob(10_000, 7), CSV)
    data = blob(20_000, 8)
    hub.add_release("u2netp.onnx", data)
    _with_md5(monkeypatch, "u2netp", data)
    with pytest.raises(UserError, match=re.escape(str(models / "wd14" / VIT))):
        get_tagger(VIT)
    assert store.ensure(VIT) == models / "wd14" / VIT
    assert make_tagger(VIT).model_dir == models / "wd14" / VIT
    assert store.ensure("u2netp") == models / "u2net"
    assert model_file("u2netp") == models / "u2net" / "u2netp.onnx"
    webui.on_script_unloaded()
    assert store.HOST_MODELS_DIR == [] and store.find(VIT) is None


# --------------------------------------------------------------------------------------------- steps run on it

@needs_onnx
def test_tagger_runs_on_the_downloaded_model(hub, tmp_path):
    from lora_trainer.tagging.registry import get_tagger
    from prepare_fixtures import wd14_labels, wd14_model

    made = wd14_model(tmp_path / "made", wd14_labels())
    serve_tagger(hub, (made / "model.onnx").read_bytes(), (made / "selected_tags.csv").read_bytes())
    store.ensure(VIT)
    red = Image.new("RGB", (300, 300), (230, 20, 20))
    tagger = get_tagger(VIT)
    assert tagger.model_dir == tmp_path / "cache" / "models" / "wd14" / VIT
    names = tagger.tag([red])[0].names()
    assert names[:2] == ["red_background", "1girl"] and "general" not in names
    assert get_tagger("wd14").model_dir == tagger.model_dir  # plain wd14 falls back to the default v3 model


@needs_onnx
@needs_rembg
def test_background_runs_on_the_downloaded_model(hub, tmp_path, monkeypatch):
    from lora_trainer.prepare import background as bgmod
    from prepare_fixtures import tiny_u2net

    data = tiny_u2net(tmp_path / "made.onnx").read_bytes()
    hub.add_release("u2netp.onnx", data)
    _with_md5(monkeypatch, "u2netp", data)
    with pytest.raises(UserError, match="models download u2netp"):
        bgmod.MaskModel("u2netp")
    assert store.ensure("u2netp") == tmp_path / "u2net"
    img = Image.new("RGB", (64, 64), (230, 20, 20))
    img.paste((20, 20, 230), (16, 16, 48, 48))
    mask = bgmod.MaskModel("u2netp").predict(img)
    assert mask[32, 32] > 0.9 and mask[2, 2] < 0.1


# --------------------------------------------------------------------------------------------- base models

def serve_folder(hub, repo: str, folder: Path) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            hub.add_hub(repo, p.relative_to(folder).as_posix(), p.read_bytes(), lfs=p.suffix == ".safetensors")


@pytest.mark.skipif(not has("diffusers"), reason="needs diffusers (standalone profile)")
def test_base_model_by_hub_id_downloads_then_loads_offline(hub, tmp_path, monkeypatch):
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from tiny_sd import tiny_parts

    from lora_trainer.models import load_backend

    c = tiny_parts()
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    StableDiffusionPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
                            scheduler=sched, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(tmp_path / "made")
    (tmp_path / "made" / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle: never fetched")
    (tmp_path / "made" / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"variant: not fetched")
    serve_folder(hub, "test/tiny-sd", tmp_path / "made")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(store.ModelOffline, match="test/tiny-sd") as e:
        load_backend("test/tiny-sd", torch.device("cpu"))
    assert str(tmp_path / "cache" / "models" / "base" / "test--tiny-sd") in e.value.hint
    monkeypatch.delenv("HF_HUB_OFFLINE")
    backend, preset = load_backend("test/tiny-sd", torch.device("cpu"))
    assert preset is None and backend.family == "sd1" and len(backend.lora_targets("unet")) == 72
    fetched = {p for m, p, _ in hub.requests if m == "GET"}
    assert not any(p.endswith((".bin", ".fp16.safetensors")) for p in fetched)
    folder = tmp_path / "cache" / "models" / "base" / "test--tiny-sd"
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        (tmp_path / "made" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    n = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached: loads offline, no request
    assert load_backend("test/tiny-sd", torch.device("cpu"))[0].family == "sd1" and len(hub.requests) == n
    r = _cli("models", "list", "--json", env=_env())
    assert any(m["id"] == "test/tiny-sd" and m["kind"] == "base" for m in json.loads(r.stdout)["models"])


def test_base_model_by_url_and_the_repo_checks(hub, tmp_path):
    data = blob(300_000, 9)
    hub.add_hub("someone/checkpoints", "model.safetensors", data, lfs=True)
    url = f"{hub.url}/someone/checkpoints/resolve/main/model.safetensors"
    path = Path(store.resolve_base_model(url))
    assert path.read_bytes() == data and path.parent.parent == tmp_path / "cache" / "models" / "base"
    assert store.resolve_base_model(url) == str(path)  # cached
    assert store.resolve_base_model(str(tmp_path)) == str(tmp_path)  # a local path stays as given
    with pytest.raises(UserError, match="not the URL of a .safetensors"):
        store.resolve_base_model(f"{hub.url}/x/model.ckpt")
    with pytest.raises(UserError, match="not a diffusers model"):
        store.resolve_base_model("someone/checkpoints")
    hub.add_hub("someone/pickles", "model_index.json", b"{}", lfs=False)
    hub.add_hub("someone/pickles", "unet/diffusion_pytorch_model.bin", b"x", lfs=True)
    with pytest.raises(UserError, match="no .safetensors weights in unet/"):
        store.resolve_base_model("someone/pickles")
    r = _cli("models", "delete", url, env=_env())
    assert r.returncode == 0 and not path.exists()


def test_a_whole_partial_file_of_unknown_size_is_finished_not_refetched(hub, tmp_path, monkeypatch):
    """rembg's files come from GitHub, whose redirect announces no size: a .part that is already whole gets
    416 for its range request; the md5 then decides, instead of the download failing forever."""
    data = blob(50_000, 10)
    hub.add_release("u2netp.onnx", data)
    _with_md5(monkeypatch, "u2netp", data)
    home = tmp_path / "u2net"
    home.mkdir()
    url = f"{hub.url}/release/u2netp.onnx"
    (home / "u2netp.onnx.part").write_bytes(data)
    (home / "u2netp.onnx.part.json").write_text(json.dumps({"url": url, "hash": hashlib.md5(data).hexdigest(),
                                                            "size": 0}), encoding="utf-8")
    assert store.ensure("u2netp") == home and (home / "u2netp.onnx").read_bytes() == data
    assert not (home / "u2netp.onnx.part").exists()


def test_the_token_goes_to_the_hub_only(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    serve_tagger(hub, blob(100_000, 11), CSV)
    data = blob(1000, 12)
    hub.add_release("u2netp.onnx", data)
    _with_md5(monkeypatch, "u2netp", data)
    monkeypatch.setenv("LORA_TRAINER_REMBG_URL", hub.url.replace("127.0.0.1", "localhost") + "/release")
    hub.cdn = hub.url.replace("127.0.0.1", "localhost")  # the LFS bytes come from another host, as hf.co's CDN
    store.ensure(VIT)
    store.ensure("u2netp")
    sent = dict((p, a) for p, a in hub.auth)
    assert sent[f"/SmilingWolf/{VIT}/resolve/main/model.onnx"] == "Bearer hf_secret"
    assert sent["/release/u2netp.onnx"] == ""
    assert {a for p, a in hub.auth if p.startswith("/cdn/")} == {""}


# --------------------------------------------------------------------------------------------- the API's job

def test_api_downloads_a_model_as_a_job_with_progress(hub, tmp_path):
    """POST /models/{id}/download over real HTTP: 202 with a job, byte progress while it runs, the files in
    place when it finishes; GET /models says so; an unknown id is a 400 before anything is queued."""
    httpx = pytest.importorskip("httpx")
    from lora_trainer.api import PREFIX, create_app
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service

    model = blob(2_000_000, 13)
    serve_tagger(hub, model, CSV)
    hub.slow = 0.005
    service = Service(tmp_path / "ws")
    try:
        with BackgroundServer(create_app(service)) as srv:
            c = httpx.Client(base_url=srv.url + PREFIX, timeout=30)
            before = {m["id"]: m for m in c.get("/models").json()}
            assert before[VIT]["downloaded"] is False and before[VIT]["kind"] == "tagger"
            r = c.post(f"/models/{VIT}/download")
            assert r.status_code == 202, r.text
            job = r.json()["job"]
            seen, deadline = [], time.time() + 60
            while time.time() < deadline:
                st = c.get(f"/jobs/{job}").json()
                if st.get("percent") is not None:
                    seen.append(st["percent"])
                if st["status"] in ("finished", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            assert st["status"] == "finished", st
            assert any(0 < p < 100 for p in seen) and st["percent"] == 100.0
            assert st["progress"]["total"] == len(model) + len(CSV)
            after = {m["id"]: m for m in c.get("/models").json()}
            assert after[VIT]["downloaded"] is True
            assert (Path(after[VIT]["folder"]) / "model.onnx").read_bytes() == model
            r = c.post("/models/nope/download")
            assert r.status_code == 400 and "unknown model" in r.json()["error"]
            assert c.get("/projects").json() == []  # the download's job folder is no project
    finally:
        service.runner.shutdown()


@pytest.mark.skipif(not has("diffusers"), reason="needs diffusers (standalone profile)")
def test_the_ui_command_takes_a_hub_id_and_resolves_it_on_first_use(tmp_path, monkeypatch):
    """``ui --base-model owner/name``: the service is made without touching the network; the model is
    resolved through the store when a step first needs it (offline here: the message names the folder)."""
    from lora_trainer.ui.standalone import make_service, model_label

    monkeypatch.setenv("LORA_TRAINER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    service = make_service(str(tmp_path / "ws"), "test/tiny-sd", "cpu")
    try:
        assert model_label("test/tiny-sd") == "tiny-sd"
        with pytest.raises(store.ModelOffline) as e:
            service.models.backend()
        assert str(tmp_path / "cache" / "models" / "base" / "test--tiny-sd") in e.value.hint
    finally:
        service.runner.shutdown()
