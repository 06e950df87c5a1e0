"""Every bad input the README documents, for every command: exit 2 and ONE line on stderr saying what is
wrong (and, for a model file, which file), never a traceback (INTERFACES §1). One table for the CLI; the
model-file rows run as real processes and must answer before any model is loaded. The API side: the same
bad files answer 4xx JSON naming the file, never 500 or a job that fails later.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lora_trainer.cli import main
from lora_trainer.model_files import SDXL_KEY, TE_SD1_KEY, UNET_ATTN2_K

REPO = Path(__file__).resolve().parents[1]


def write_safetensors(path: Path, tensors: dict, cut: int = 0) -> Path:
    """A real .safetensors file (zeros) written with the format's own layout, no torch; ``cut`` bytes
    removed from the end (a half-copied download)."""
    size = {"F16": 2, "F32": 4}
    header, at = {"__metadata__": {"ss_network_module": "networks.lora"}}, 0
    for name, (dtype, shape) in tensors.items():
        n = size[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + n]}
        at += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = struct.pack("<Q", len(raw)) + raw + bytes(at)
    path.write_bytes(data[:len(data) - cut] if cut else data)
    return path


LORA_KEYS = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": ("F16", (4, 32)),
             "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": ("F16", (32, 4)),
             "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": ("F16", ())}
SD1_KEYS = {TE_SD1_KEY: ("F16", (77, 768)), UNET_ATTN2_K: ("F16", (320, 768))}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("badfiles")
    f = {
        "missing": d / "missing.safetensors",
        "lora": write_safetensors(d / "good_lora.safetensors", LORA_KEYS),
        "lora_trunc": write_safetensors(d / "amy_trunc.safetensors", LORA_KEYS, cut=100),
        "sd1": write_safetensors(d / "sd15.safetensors", SD1_KEYS),
        "sd1_trunc": write_safetensors(d / "sd15_trunc.safetensors", SD1_KEYS, cut=200_000),
        "sdxl": write_safetensors(d / "sdxl.safetensors", {SDXL_KEY: ("F16", (1280,))}),
        "other": write_safetensors(d / "vae_only.safetensors", {"encoder.conv_in.weight": ("F16", (8, 3, 3, 3))}),
        "ckpt": d / "model.ckpt",
        "fake": d / "fake.safetensors",
        "html": d / "download.safetensors",
        "empty": d / "empty.safetensors",
        "text": d / "text.safetensors",
        "nofolder": d / "not_a_model",
        "folder_partial": d / "partial_diffusers",
        "data": d / "data",
        "tags": d / "tags",
        "nophotos": d / "nophotos",
    }
    f["nophotos"].mkdir()
    (f["nophotos"] / "IMG_1.jpg").write_text("not a jpeg", encoding="utf-8")
    f["ckpt"].write_bytes(b"\x80\x02}q\x00.")
    f["fake"].write_bytes(os.urandom(4096))
    f["html"].write_text("<!DOCTYPE html><html><body>Please log in</body></html>", encoding="utf-8")
    f["empty"].write_bytes(b"")
    f["text"].write_text("hello\n", encoding="utf-8")
    f["nofolder"].mkdir()
    (f["folder_partial"] / "unet").mkdir(parents=True)
    (f["folder_partial"] / "model_index.json").write_text("{}", encoding="utf-8")
    (f["data"] / "1_x").mkdir(parents=True)
    (f["tags"]).mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(f["tags"] / "a.png")  # the tag commands see one captioned image
    (f["tags"] / "a.txt").write_text("x, y", encoding="utf-8")
    return f


# (command args, fragment of the one line). {name} is replaced by the path of files[name], {tmp} by a
# fresh folder. Rows marked PROC run as real processes (the model-file checks: they must answer at once).
PROC = "proc"
CASES = [
    # --- train ---
    (PROC, ["train", "--base-model", "{missing}"], "missing.safetensors: model not found"),
    (PROC, ["train", "--base-model", "{sd1_trunc}"], "sd15_trunc.safetensors is truncated"),
    (PROC, ["train", "--base-model", "{fake}"], "fake.safetensors is not a .safetensors file"),
    (PROC, ["train", "--base-model", "{text}"], "text.safetensors is not a .safetensors file"),
    (PROC, ["train", "--base-model", "{ckpt}"], "--base-model {ckpt} is a pickle checkpoint"),
    ("main", ["train", "--base-model", "{html}"], "download.safetensors is a web page"),
    ("main", ["train", "--base-model", "{empty}"], "empty.safetensors is empty (0 bytes)"),
    ("main", ["train", "--base-model", "{lora}"], "good_lora.safetensors is a LoRA, not a base model"),
    ("main", ["train", "--base-model", "{sdxl}"], "sdxl.safetensors: SDXL checkpoints are not supported"),
    ("main", ["train", "--base-model", "{other}"], "vae_only.safetensors is not a Stable Diffusion 1.x/2.x"),
    ("main", ["train", "--base-model", "{nofolder}"], "not_a_model is not a diffusers model folder"),
    ("main", ["train", "--base-model", "{folder_partial}"], "partial_diffusers is incomplete"),
    ("main", ["train", "--rank", "0"], "rank: 0 is below the minimum"),
    ("main", ["train", "--optimizer", "SGD9"], "invalid choice: 'SGD9'"),
    ("main", ["train", "--data", "{missing}", "--no-forecast"], "dataset folder not found"),
    ("main", ["train", "--resume", "{nofolder}"], "is not a job folder"),
    ("main", ["train", "--config", "{missing}"], "missing.safetensors"),
    # --- generate ---
    (PROC, ["generate", "--lora", "{missing}", "--prompt", "x", "--output", "{tmp}/o.png"],
     "--lora {missing}: no such file"),
    (PROC, ["generate", "--lora", "{lora_trunc}", "--prompt", "x", "--output", "{tmp}/o.png"],
     "amy_trunc.safetensors is truncated"),
    (PROC, ["generate", "--base-model", "{sd1_trunc}", "--lora", "{lora}", "--prompt", "x", "--output", "{tmp}/o.png"],
     "sd15_trunc.safetensors is truncated"),
    (PROC, ["generate", "--base-model", "{fake}", "--prompt", "x", "--output", "{tmp}/o.png"],
     "fake.safetensors is not a .safetensors file"),
    ("main", ["generate", "--lora", "{sd1}", "--prompt", "x", "--output", "{tmp}/o.png"],
     "sd15.safetensors is a base model, not a LoRA"),
    ("main", ["generate", "--lora", "{other}", "--prompt", "x", "--output", "{tmp}/o.png"],
     "vae_only.safetensors has no LoRA weights"),
    ("main", ["generate", "--lora", "{html}", "--prompt", "x", "--output", "{tmp}/o.png"], "is a web page"),
    ("main", ["generate", "--lora", "{ckpt}", "--prompt", "x", "--output", "{tmp}/o.png"], "pickle"),
    ("main", ["generate", "--prompt", "x"], "--output"),
    # --- estimate ---
    (PROC, ["estimate", "--base-model", "{sd1_trunc}"], "sd15_trunc.safetensors is truncated"),
    ("main", ["estimate", "--base-model", "{ckpt}"], "pickle"),
    ("main", ["estimate", "--probe-optimizer", "Adam"], "invalid choice"),
    # --- prepare ---
    ("main", ["prepare", "--input", "{missing}", "--output-dir", "{tmp}/p"], "missing.safetensors"),
    ("main", ["prepare", "--input", "{tags}", "--output-dir", "{tmp}/p", "--fill", "purple"],
     "fill: 'purple' is not a colour"),
    ("main", ["prepare", "--input", "{tags}", "--output-dir", "{tmp}/p", "--crop", "zoom"], "invalid choice"),
    ("main", ["prepare", "--output-dir", "{tmp}/p"], "--input"),
    # none of the photos usable: the per-file report lines come first (they are the answer), then one error
    ("report", ["prepare", "--input", "{nophotos}", "--output-dir", "{tmp}/p"], "no image could be processed"),
    # --- tag ---
    ("main", ["tag", "--input", "{tags}", "--tagger", "nosuch"], "nosuch"),
    ("main", ["tag", "--input", "{tags}", "--tagger", "wd14", "--model-dir", "{nofolder}"], "not_a_model"),
    ("main", ["tag", "--input", "{missing}", "--tagger", "toy"], "missing.safetensors"),
    # --- tags ---
    ("main", ["tags", "freq", "--input", "{missing}"], "missing.safetensors"),
    ("main", ["tags", "freq", "--filter", "AND", "--input", "{tags}"], "AND"),
    ("main", ["tags", "add", "--input", "{tags}"], "--tags"),
    ("main", ["tags", "nosuch", "--input", "{tags}"], "invalid choice"),
    # --- demo ---
    ("main", ["demo"], "--output-dir"),
    ("main", ["demo", "--output-dir", "{tmp}/d", "--steps", "many"], "invalid int value"),
    # --- serve ---
    (PROC, ["serve", "--base-model", "{sd1_trunc}"], "sd15_trunc.safetensors is truncated"),
    ("main", ["serve", "--host", "0.0.0.0"], "without a token"),
    ("main", ["serve", "--root", "{missing}"], "not a folder"),
    ("main", ["serve", "--token", "short"], "token is too short"),
    # --- ui ---
    (PROC, ["ui", "--base-model", "{fake}"], "fake.safetensors is not a .safetensors file"),
    ("main", ["ui", "--base-model", "{ckpt}"], "pickle"),
    ("main", ["ui", "--lang", "fr"], "invalid choice"),
]


def _fill(args, files, tmp):
    sub = {**{k: str(v) for k, v in files.items()}, "tmp": str(tmp)}
    return [a.format(**sub) for a in args]


@pytest.mark.parametrize("mode,args,fragment", CASES, ids=[" ".join(c[1][:3]) for c in CASES])
def test_bad_input_exits_2_with_one_line(mode, args, fragment, files, tmp_path, capsys, monkeypatch):
    argv = _fill(args, files, tmp_path)
    fragment = fragment.format(**{k: str(v) for k, v in files.items()})
    monkeypatch.setenv("LORA_TRAINER_LOG", str(tmp_path / "log.txt"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORA_TRAINER_TOKEN", raising=False)
    if mode == PROC:
        env = {**os.environ, "PYTHONPATH": str(REPO), "LORA_TRAINER_LOG": str(tmp_path / "log.txt")}
        t0 = time.time()
        r = subprocess.run([sys.executable, "-m", "lora_trainer", *argv], capture_output=True, text=True,
                           timeout=120, env=env, cwd=tmp_path)
        took = time.time() - t0
        code, err = r.returncode, r.stderr
        assert took < 10, f"{took:.1f} s: the file was not checked before loading"
    else:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    if mode == "report":
        assert lines[:-1] and all(x.startswith(("skipped: ", "failed: ")) for x in lines[:-1]), err
        lines = lines[-1:]
    assert len(lines) == 1, err
    assert "Traceback" not in err and fragment in lines[0], err
    assert lines[0].startswith("error:")


# ------------------------------------------------------------------------------------- the API side

@pytest.fixture()
def api(tmp_path):
    pytest.importorskip("fastapi")
    from lora_trainer.api import create_app
    from lora_trainer.api.serve import BackgroundServer
    from lora_trainer.service import Service, StandaloneModels

    made = []

    def start(base_model=None):
        svc = Service(tmp_path / "ws", StandaloneModels(base_model=str(base_model) if base_model else None,
                                                        device="cpu"))
        srv = BackgroundServer(create_app(svc)).start()
        made.append((srv, svc))
        return srv, svc

    yield start
    for srv, svc in made:
        srv.stop()
        svc.runner.shutdown(cancel_running=True)


def _post(url, body):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("bad", ["sd1_trunc", "fake", "lora", "html"])
def test_api_bad_base_model_is_a_400_naming_the_file(api, files, bad):
    srv, svc = api(files[bad])
    base = srv.url + "/lora-trainer/v1"
    assert _post(base + "/projects", {"name": "amy"})[0] == 201
    for route, body in [("train", {}), ("estimate", {}), ("generate", {"prompts": ["x"]})]:
        status, res = _post(f"{base}/projects/amy/{route}", body)
        assert 400 <= status < 500, (route, status, res)
        assert files[bad].name in res["error"] and res.get("hint"), res
    assert svc.runner.list() == []  # refused before a job was queued


@pytest.mark.parametrize("bad,fragment", [("lora_trunc", "is truncated"), ("sd1", "is a base model, not a LoRA"),
                                          ("empty", "is empty"), ("fake", "not a .safetensors file")])
def test_api_bad_lora_is_a_400_naming_the_file(api, files, bad, fragment):
    import shutil

    srv, svc = api()
    base = srv.url + "/lora-trainer/v1"
    assert _post(base + "/projects", {"name": "amy"})[0] == 201
    out = svc.project("amy").output
    shutil.copyfile(files[bad], out / "amy.safetensors")
    for body in [{"prompts": ["x"], "lora": "amy.safetensors"}, {"prompts": ["x <lora:amy:0.8>"]}]:
        status, res = _post(f"{base}/projects/amy/generate", body)
        assert status == 400, (status, res)
        assert "amy.safetensors" in res["error"] and fragment in res["error"], res
