"""The CLI: --help from the dataclass, exit codes (0, 2 bad input, 130 cancelled), files a run leaves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import needs_diffusers
from lora_trainer.cli import build_parser, main


def test_help_lists_every_train_option_with_its_help(capsys):
    import dataclasses

    from lora_trainer.config import TrainConfig

    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name
    assert "LoRA rank (network_dim)" in out and "--no-shuffle-caption" in out


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "missing"), "--rank", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: rank: 0 is below the minimum")


def test_ckpt_base_model_exits_2(tmp_path, capsys):
    (tmp_path / "m.ckpt").write_bytes(b"x")  # refused by the pure file check: no diffusers needed
    code = main(["train", "--base-model", str(tmp_path / "m.ckpt")])
    assert code == 2 and "pickle" in capsys.readouterr().err


def test_no_command_prints_help():
    assert main([]) == 2
    assert "train" in build_parser().format_help()


@needs_diffusers
def test_train_then_generate_end_to_end(tmp_path):
    """A real subprocess run: files of INTERFACES §2 appear, the JSON line says finished."""
    from lora_trainer.training.tiny import tiny_dataset

    tiny_dataset(tmp_path / "data", n=2, repeats=1, name="Amy")
    (tmp_path / "data" / "1_Amy" / "IMG_7.HEIC").write_bytes(b"x")  # left out, with a warning
    out = tmp_path / "out"
    env = {"LORA_TRAINER_LOG": str(tmp_path / "log.txt"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    import os

    env = {**os.environ, **env}
    r = subprocess.run([sys.executable, "-m", "lora_trainer", "train", "--data", str(tmp_path / "data"),
                        "--output-dir", str(out), "--epochs", "2", "--batch-size", "1", "--optimizer", "AdamW",
                        "--save-fractions", "0.5"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["status"] == "finished" and res["steps"] == 4
    assert "warning: 1 file(s) in a format training does not read (IMG_7.HEIC) left out" in r.stderr, r.stderr
    assert (out / "Amy.safetensors").is_file() and (out / "Amy.json").is_file()
    assert (out / "Amy-step000002.safetensors").is_file()
    job = out / "jobs" / res["job"].split("/")[-1]
    assert json.loads((job / "state.json").read_text())["status"] == "finished"
    assert len((job / "log.jsonl").read_text().splitlines()) == 4
    r = subprocess.run([sys.executable, "-m", "lora_trainer", "generate", "--lora", str(out / "Amy.safetensors"),
                        "--prompt", "tok, red square", "--output", str(tmp_path / "x.png"), "--steps", "2",
                        "--size", "64", "--sampler", "DPM++ 2M"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "x.png").size == (64, 64)
    r = subprocess.run([sys.executable, "-m", "lora_trainer", "generate", "--prompt", "x", "--output",
                        str(tmp_path / "y.png"), "--sampler", "k_lms"], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode != 0 and "unknown sampler 'k_lms'" in r.stderr and not (tmp_path / "y.png").exists()


def test_generate_help_names_every_sampler():
    from lora_trainer.generate import SAMPLERS

    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "generate")[1]
    text = " ".join(sub.format_help().split())
    assert all(name in text for name in SAMPLERS), text
