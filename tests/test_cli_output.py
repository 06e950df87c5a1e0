"""What the commands print and what they default to (issue #28, items 9-10): training shows progress lines
when stderr is a pipe, ``generate`` and the tab's Test step draw with the model's own sampling settings
(the toy model: CFG 3), and no third-party warning is a command's first line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import needs_diffusers

# The known noise, as each library words it (bitsandbytes' logger, transformers' logger.warning_once,
# gradio's print).
NOISE = ("Failed to load CPU gemm_4bit_forward", "requires torchvision (not installed)",
         "set `share=True` in `launch()`")


def _env(tmp_path) -> dict:
    return {**os.environ, "LORA_TRAINER_LOG": str(tmp_path / "log.txt"), "HF_HUB_OFFLINE": "1"}


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(n in line for n in NOISE)]


@needs_diffusers
def test_generate_says_no_third_party_warnings(tmp_path):
    """Importing diffusers' pipeline pulls in bitsandbytes (its CPU 4-bit kernels warning, on AVX512-BF16
    CPUs) and touches transformers' CLIPImageProcessor (its torchvision warning); neither concerns us."""
    r = subprocess.run([sys.executable, "-m", "lora_trainer", "generate", "--prompt", "red circle", "--output",
                        str(tmp_path / "x.png"), "--steps", "2", "--device", "cpu"], capture_output=True, text=True,
                       timeout=600, env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert not _noise(r.stderr + r.stdout), r.stderr
    assert json.loads(r.stdout)["output"] == str(tmp_path / "x.png")


@needs_diffusers
def test_train_through_a_pipe_prints_progress_lines_and_no_noise(tmp_path):
    """stderr is a pipe here, where tqdm draws nothing: a line for each step the run reports (this short run
    is under 20 steps, so every one)."""
    from lora_trainer.training.tiny import tiny_dataset

    tiny_dataset(tmp_path / "data", n=2, repeats=1, name="Amy")
    r = subprocess.run([sys.executable, "-m", "lora_trainer", "train", "--data", str(tmp_path / "data"),
                        "--output-dir", str(tmp_path / "out"), "--epochs", "3", "--batch-size", "1",
                        "--optimizer", "AdamW", "--no-forecast"], capture_output=True, text=True, timeout=600,
                       env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    train = [ln.split()[1] for ln in lines if ln.startswith("train ")]
    # the run reports when it reads the loss (every sync_every steps and at saves): a step may be skipped,
    # the last never is
    assert len(train) >= 3 and train[-1] == "6/6" and len(set(train)) == len(train), r.stderr
    assert any(ln.startswith("train 6/6 loss ") for ln in lines), r.stderr
    assert any(ln.startswith("caching latents 2/2") for ln in lines), r.stderr
    assert not _noise(r.stderr), r.stderr


def test_a_long_run_prints_about_twenty_lines_per_phase():
    import io

    from lora_trainer.cli import _Bar
    from lora_trainer.training.loop import Progress

    out = io.StringIO()  # no terminal
    bar = _Bar(out)
    for step in range(1, 1001):
        if step % 7 == 0:
            continue  # progress skips steps when they come faster than it reports
        bar.update(Progress(step=step, total=1000, epoch=1, loss=0.1, lr=1e-4, it_s=2.0, eta=(1000 - step) / 2))
        bar.update(Progress(step=step, total=1000, epoch=1, loss=0.1, lr=1e-4, it_s=2.0, eta=0))  # repeated
    lines = out.getvalue().splitlines()
    assert len(lines) == 20 and lines[0].startswith("train 50/1000 loss 0.1000") and "eta 475 s" in lines[0]
    assert lines[1].startswith("train 100/1000") and lines[-1].startswith("train 1000/1000")


@needs_diffusers
def test_generate_without_cfg_draws_at_the_toy_models_cfg_3(tmp_path, capsys):
    """The toy model samples at CFG 3 (config.TOY_SAMPLING); the CLI used to default to 7 and drew noise."""
    from PIL import Image

    from lora_trainer.cli import main

    def draw(name: str, *extra: str) -> list:
        out = tmp_path / f"{name}.png"
        assert main(["generate", "--prompt", "red circle, white background, large, center", "--output", str(out),
                     "--device", "cpu", "--seed", "5", *extra]) == 0
        return list(Image.open(out).getdata())

    default = draw("default")
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert default == draw("cfg3", "--cfg-scale", "3", "--steps", "20", "--sampler", "Euler")
    assert default != draw("cfg7", "--cfg-scale", "7", "--steps", "20")
    assert (said["cfg_scale"], said["steps"], said["sampler"]) == (3.0, 20, "Euler")


def test_the_test_step_and_the_service_default_to_the_models_sampling(tmp_path):
    pytest.importorskip("gradio")
    from lora_trainer.service import Service, StandaloneModels
    from lora_trainer.ui.tab import build_tab, parts_of

    svc = Service(tmp_path / "ws", StandaloneModels(device="cpu"))
    try:
        parts = parts_of(build_tab(svc, {"host": "test"}))["steps"]["test"]
        assert (parts["cfg"].value, parts["steps"].value, parts["sampler"].value) == (3.0, 20, "Euler")
        assert svc.sampling() == {"steps": 20, "cfg_scale": 3.0, "sampler": "Euler"}
        user = Service(tmp_path / "ws2", StandaloneModels(base_model="/models/sd15.safetensors", device="cpu"))
        assert user.sampling()["cfg_scale"] == 7.0  # a user's SD model: the WebUI's usual
        user.runner.shutdown()
    finally:
        svc.runner.shutdown()


def test_the_standalone_ui_prints_no_share_hint(tmp_path, capsys):
    gr = pytest.importorskip("gradio")
    from lora_trainer.ui.standalone import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with gr.Blocks() as app:
        gr.Markdown("x")
    launch(app, "127.0.0.1", port, str(tmp_path), block=False)
    try:
        out = capsys.readouterr()
        assert not _noise(out.out + out.err), out.out
    finally:
        app.close()
