"""``prepare`` and ``tag`` on the command line: flags from the dataclasses, exit codes 0 / 2 / 130,
report.json, config files."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lora_trainer.cli import main
from lora_trainer.prepare.config import PrepareConfig, TagConfig
from prepare_fixtures import photo


def _flags(cls, skip=()):
    return ["--" + f.name.replace("_", "-") for f in dataclasses.fields(cls) if f.name not in skip]


@pytest.mark.parametrize("command,classes", [("prepare", (PrepareConfig, TagConfig)), ("tag", (TagConfig,))])
def test_help_lists_every_option(command, classes, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cls in classes:
        for flag in _flags(cls):
            assert flag in out, flag
    assert "--config" in out and "--input" in out


@pytest.fixture
def src(tmp_path):
    s = tmp_path / "src"
    s.mkdir()
    photo(320, 240, 1).save(s / "a.jpg", quality=90)
    (s / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return s


def test_prepare_exit_0_report_and_bad_file_line(src, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prepare", "--input", str(src), "--output-dir", str(out), "--size", "128", "--fill", "#102030"])
    cap = capsys.readouterr()
    assert code == 0
    line = json.loads(cap.out.strip().splitlines()[-1])
    assert line["processed"] == 1 and line["skipped"] == 1 and line["report"].endswith("report.json")
    assert "skipped: broken.jpg:" in cap.err
    rep = json.loads((out / "report.json").read_text("utf-8"))
    assert rep["config"]["size"] == 128 and rep["config"]["fill"] == "#102030"


def test_prepare_exit_2_cases(src, tmp_path, capsys, monkeypatch):
    (src / "a.jpg").unlink()
    code = main(["prepare", "--input", str(src), "--output-dir", str(tmp_path / "o1")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: no image could be processed")
    assert (tmp_path / "o1" / "report.json").is_file()

    code = main(["prepare", "--input", str(src), "--output-dir", str(tmp_path / "o2"), "--fill", "purple"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fill: 'purple' is not a colour" in err[0]

    photo(100, 100).save(src / "b.png")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "no-models"))
    code = main(["prepare", "--input", str(src), "--output-dir", str(tmp_path / "o3"), "--background", "u2netp"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(tmp_path / "no-models" / "u2netp.onnx") in err[0]


def test_config_file_tables_and_flags_override(src, tmp_path, capsys):
    cfg = tmp_path / "prep.toml"
    cfg.write_text('[prepare]\nsize = 96\ncrop = "none"\nmax_side = 200\n[tag]\nthreshold = 0.5\n', encoding="utf-8")
    out = tmp_path / "out"
    assert main(["prepare", "--input", str(src), "--output-dir", str(out), "--config", str(cfg),
                 "--max-side", "160"]) == 0
    rep = json.loads((out / "report.json").read_text("utf-8"))
    assert rep["config"]["crop"] == "none" and rep["config"]["max_side"] == 160
    ok = [f for f in rep["files"] if f["status"] == "ok"][0]
    assert ok["out_size"] == [160, 120]
    bad = tmp_path / "bad.toml"
    bad.write_text("sise = 3\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["prepare", "--input", str(src), "--output-dir", str(out), "--config", str(bad)]) == 2
    assert "did you mean 'size'" in capsys.readouterr().err


def test_tag_command(tmp_path, capsys):
    from lora_trainer.toy.world import Scene, render

    render(Scene("circle", "red", "blue")).save(tmp_path / "a.png")
    assert main(["tag", "--input", str(tmp_path)]) == 2  # no tagger chosen
    assert "no tagger chosen" in capsys.readouterr().err
    assert main(["tag", "--input", str(tmp_path), "--tagger", "toy", "--trigger", "zkw", "--max-tags", "2"]) == 0
    assert (tmp_path / "a.txt").read_text("utf-8").strip() == "zkw, red circle, blue background"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tagged"] == 1
    assert main(["tag", "--input", str(tmp_path / "nope"), "--tagger", "toy"]) == 2


def test_ctrl_c_exits_130_with_a_report(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(150):
        photo(900, 700, i).save(src / f"p{i:03d}.jpg", quality=85)
    out = tmp_path / "out"
    env = {**os.environ, "LORA_TRAINER_LOG": str(tmp_path / "log.txt")}
    p = subprocess.Popen([sys.executable, "-m", "lora_trainer", "prepare", "--input", str(src), "--output-dir",
                          str(out), "--workers", "1", "--size", "512"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env,
                         # a suite started in the background inherits SIGINT ignored; Ctrl-C is what we test
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(out.glob("p*.png"))):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    rep = json.loads((out / "report.json").read_text("utf-8"))
    st = [f["status"] for f in rep["files"]]
    assert rep["cancelled"] and "ok" in st and "cancelled" in st and len(st) == 150
