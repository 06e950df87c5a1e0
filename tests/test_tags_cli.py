"""``python -m lora_trainer tags …``: every action from the shell, exit codes 0 and 2 (INTERFACES.md §1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.cli import main

REPO = Path(__file__).resolve().parents[1]

CAPTIONS = {
    "a": "1girl, nose, hat, witch hat, smile",
    "b": "1girl, outdoors, long hair",
    "c": "1boy, smile, smile",
    "d": "scenery, tree",
}


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    for k, cap in CAPTIONS.items():
        Image.new("RGB", (8, 8)).save(d / f"{k}.png")
        (d / f"{k}.txt").write_text(cap, encoding="utf-8")
    return d


def _cap(d: Path, k: str) -> str:
    return (d / f"{k}.txt").read_text(encoding="utf-8")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["tags", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_suggest_json(folder, capsys):
    code, out, _ = run(capsys, "suggest", "--input", str(folder), "--json", "--background", "white")
    assert code == 0
    data = json.loads(out)
    assert all(set(s) == {"image", "tag", "action", "reason"} and s["action"] in ("remove", "add", "flag") for s in data)
    pairs = {(s["image"], s["tag"], s["action"]) for s in data}
    assert {("a.png", "nose", "remove"), ("a.png", "hat", "remove"), ("b.png", "outdoors", "remove"),
            ("d.png", "tree", "remove"), ("d.png", "", "flag"), ("a.png", "white background", "add")} <= pairs
    assert not any(t in ("smile", "long hair", "witch hat") for _, t, _ in pairs)
    code, out, _ = run(capsys, "suggest", "--input", str(folder), "--json", "--filter", "1boy")
    assert json.loads(out) == []
    assert _cap(folder, "a") == CAPTIONS["a"]   # suggest never writes


def test_apply_then_nothing_left(folder, capsys):
    code, out, _ = run(capsys, "apply", "--input", str(folder), "--json")
    assert code == 0
    res = json.loads(out)
    assert res["changed"] == 2 and res["written"] == 2 and res["backup"]
    assert _cap(folder, "a") == "1girl, witch hat, smile"
    assert _cap(folder, "c") == "1boy, smile"          # duplicates dropped too
    assert [f["image"] for f in res["flagged"]] == ["d.png"]
    code, out, _ = run(capsys, "suggest", "--input", str(folder), "--json")
    assert [s["action"] for s in json.loads(out)] == ["flag"]


def test_freq_text_and_json(folder, capsys):
    code, out, _ = run(capsys, "freq", "--input", str(folder), "--json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["tag"] in ("1girl", "smile") and rows[0]["count"] == 2
    assert {r["tag"]: r["count"] for r in rows}["smile"] == 2
    assert {r["tag"]: r["share"] for r in rows}["tree"] == 0.25
    code, out, _ = run(capsys, "freq", "--input", str(folder), "--top", "1", "--filter", "1girl")
    assert out.rstrip().splitlines() == ["     2  100.0%  1girl" + _zh_suffix("1girl")]


def _zh_suffix(tag: str) -> str:
    from lora_trainer.tags.translate import get_translator

    zh = get_translator().zh(tag)
    return f"  ({zh})" if zh else ""


def test_add_remove_replace_with_filter_and_trigger(folder, capsys):
    code, out, _ = run(capsys, "add", "--input", str(folder), "--tags", "sks", "--position", "front",
                       "--filter", "1girl AND NOT hat")
    assert code == 0 and "changed 1 of 4" in out
    assert _cap(folder, "b") == "sks, 1girl, outdoors, long hair" and _cap(folder, "a") == CAPTIONS["a"]
    code, out, _ = run(capsys, "add", "--input", str(folder), "--tags", "solo", "--trigger", "sks", "--position", "front")
    assert _cap(folder, "a").startswith("sks, solo, 1girl") and _cap(folder, "d") == "sks, solo, scenery, tree"
    code, out, _ = run(capsys, "remove", "--input", str(folder), "--tags", "solo, tree", "--json")
    assert json.loads(out)["changed"] == 4 and "solo" not in _cap(folder, "c")
    code, out, _ = run(capsys, "replace", "--input", str(folder), "--tags", "witch hat, hat", "--to", "beret")
    assert _cap(folder, "a") == "sks, 1girl, nose, beret, smile"
    code, out, _ = run(capsys, "replace", "--input", str(folder), "--tags", "beret", "--to", "x", "--dry-run", "--json")
    assert json.loads(out)["changed"] == 1 and json.loads(out)["written"] == 0 and "beret" in _cap(folder, "a")


@pytest.mark.parametrize("argv", [
    ["freq", "--input", "/nonexistent/folder"],
    ["freq", "--filter", "AND", "--input", "{folder}"],
    ["suggest", "--background", "plaid", "--input", "{folder}"],
    ["apply", "--only", "flag", "--input", "{folder}"],
    ["add", "--tags", " , ", "--input", "{folder}"],
])
def test_bad_input_exits_2_with_one_line(folder, capsys, argv):
    code, out, err = run(capsys, *[a.replace("{folder}", str(folder)) for a in argv])
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1


def test_real_process_and_usage_errors(folder):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "lora_trainer", "tags", "suggest", "--input", str(folder), "--json"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert res.returncode == 0 and isinstance(json.loads(res.stdout), list)
    res = subprocess.run([sys.executable, "-m", "lora_trainer", "tags", "add", "--input", str(folder)],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "--tags" in res.stderr
