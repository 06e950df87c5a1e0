"""Caption store: load rules, only-changed saves with backups, undo/redo chains, a save killed mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.errors import UserError
from lora_trainer.tags import ops, store

REPO = Path(__file__).resolve().parents[1]


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 50, 50)).save(path)
    return path


def _folder(tmp_path: Path, n: int = 3) -> Path:
    d = tmp_path / "data"
    for i in range(n):
        _img(d / f"{i}.png").with_suffix(".txt").write_text(f"sks, tag{i}, smile", encoding="utf-8")
    return d


def test_load_reads_txt_then_caption_subfolders_and_encodings(tmp_path):
    d = tmp_path / "set"
    _img(d / "a.png").with_suffix(".txt").write_text("1girl, smile", encoding="utf-8")
    _img(d / "b.jpg").with_suffix(".caption").write_text("1boy", encoding="utf-8")
    both = _img(d / "c.png")
    both.with_suffix(".txt").write_text("from txt", encoding="utf-8")
    both.with_suffix(".caption").write_text("from caption", encoding="utf-8")
    _img(d / "d.png")                                              # no caption yet
    _img(d / "10_toy" / "e.png").with_suffix(".txt").write_bytes("长发, hat".encode("gb18030"))
    (d / ".hidden").mkdir()
    _img(d / ".hidden" / "x.png")
    st = store.load(d)
    assert st.keys() == ["a.png", "b.jpg", "c.png", "d.png", "10_toy/e.png"]
    assert st.tags("a.png") == ["1girl", "smile"]
    assert st.tags("b.jpg") == ["1boy"] and st.caption_path("b.jpg").suffix == ".caption"
    assert st.tags("c.png") == ["from txt"]
    assert st.tags("d.png") == [] and st.caption_path("d.png") == d / "d.txt"
    assert st.tags("10_toy/e.png") == ["长发", "hat"]
    assert len(st.warnings) == 1 and "e.txt" in st.warnings[0] and "UTF-8" in st.warnings[0]
    with pytest.raises(UserError):
        st.tags("nope.png")


def test_load_errors(tmp_path):
    with pytest.raises(UserError):
        store.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        store.load(tmp_path / "empty")


def test_save_writes_only_changed_files_and_keeps_a_backup(tmp_path):
    d = _folder(tmp_path)
    d.joinpath("1.txt").write_text("sks,tag1,  smile", encoding="utf-8")  # odd spacing: unchanged tags, not rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in d.glob("*.txt")}
    st = store.load(d)
    assert st.save().written == []
    st.set_tags("0.png", "sks, tag0")
    st.set_tags("2.png", ["sks", "new"])
    st.set_tags("2.png", ["sks", "new", "x"])
    assert st.dirty_keys() == ["0.png", "2.png"]
    rep = st.save()
    assert rep.written == ["0.png", "2.png"] and not st.dirty
    assert d.joinpath("0.txt").read_text(encoding="utf-8") == "sks, tag0"
    assert d.joinpath("2.txt").read_text(encoding="utf-8") == "sks, new, x"
    assert d.joinpath("1.txt").stat().st_mtime_ns == mtimes["1.txt"]
    assert d.joinpath("1.txt").read_text(encoding="utf-8") == "sks,tag1,  smile"
    assert rep.backup and rep.backup.parent.parent.name == store.META_DIR
    assert sorted(p.name for p in rep.backup.iterdir()) == ["0.txt", "2.txt"]
    assert rep.backup.joinpath("2.txt").read_text(encoding="utf-8") == "sks, tag2, smile"
    assert store.backups(d) == [rep.backup]
    assert not (d / store.META_DIR / store.JOURNAL).exists()
    # a new caption for an image that had none: written, nothing to back up
    _img(d / "3.png")
    st = store.load(d)
    st.set_tags("3.png", "fresh")
    rep = st.save()
    assert rep.written == ["3.png"] and rep.backup is None and d.joinpath("3.txt").read_text() == "fresh"
    # the store's own folder is not mistaken for a kohya subfolder of images
    assert store.load(d).keys() == ["0.png", "1.png", "2.png", "3.png"]


def test_undo_redo_chain(tmp_path):
    st = store.load(_folder(tmp_path))
    start = st.captions()
    assert st.undo() is None and st.redo() is None
    assert st.apply(ops.bulk_add(st.captions(), ["hat"]), "add hat") == 3
    assert st.apply(ops.bulk_remove(st.captions(), ["smile"]), "remove smile") == 3
    st.set_tags("1.png", ["sks", "only"], "edit 1")
    after3 = st.captions()
    assert st.history() == ["add hat", "remove smile", "edit 1"]
    assert st.apply(st.captions(), "nothing") == 0 and st.history()[-1] == "edit 1"
    assert st.undo() == "edit 1" and st.tags("1.png") == ["sks", "tag1", "hat"]
    assert st.undo() == "remove smile" and st.tags("0.png") == ["sks", "tag0", "smile", "hat"]
    assert st.undo() == "add hat" and st.captions() == start and not st.can_undo
    assert st.redo() == "add hat" and st.redo() == "remove smile" and st.redo() == "edit 1"
    assert st.captions() == after3 and not st.can_redo
    st.undo()
    st.undo()
    st.set_tags("2.png", "branch", "branch")       # a new edit after undo drops the redo chain
    assert not st.can_redo and st.history() == ["add hat", "branch"]
    assert st.tags("0.png") == ["sks", "tag0", "smile", "hat"]
    st.save()
    assert st.undo() == "branch" and st.dirty        # undo after save makes the folder dirty again


def test_leftover_temp_files_and_journal_recovery(tmp_path):
    d = _folder(tmp_path)
    (d / ".lt-tmp-old.txt").write_text("half", encoding="utf-8")
    os.utime(d / ".lt-tmp-old.txt", (time.time() - 3600, time.time() - 3600))
    (d / ".lt-tmp-fresh.txt").write_text("in flight", encoding="utf-8")   # maybe another writer's: kept
    (d / ".lt-tmp-x.png").write_bytes(b"not ours")
    st = store.load(d)
    assert sorted(p.name for p in d.glob(".lt-tmp-*")) == [".lt-tmp-fresh.txt", ".lt-tmp-x.png"]
    assert st.keys() == ["0.png", "1.png", "2.png"]
    # a journal as a killed save leaves it: 0 already new, 1 still old, 2 changed by hand since
    st.set_tags("0.png", "n0")
    st.set_tags("1.png", "n1")
    st.set_tags("2.png", "n2")
    olds = {k: st.caption_path(k).read_bytes() for k in st.keys()}
    import hashlib
    import json
    journal = {"started": 0, "backup": "backup/x", "files": [
        {"path": f"{i}.txt", "old_sha256": hashlib.sha256(olds[f"{i}.png"]).hexdigest(), "new": f"n{i}"}
        for i in range(3)]}
    (d / store.META_DIR).mkdir()
    (d / store.META_DIR / store.JOURNAL).write_text(json.dumps(journal), encoding="utf-8")
    d.joinpath("0.txt").write_text("n0", encoding="utf-8")
    d.joinpath("2.txt").write_text("edited elsewhere", encoding="utf-8")
    st2 = store.load(d)
    assert st2.tags("0.png") == ["n0"] and st2.tags("1.png") == ["n1"]
    assert st2.tags("2.png") == ["edited elsewhere"]
    assert any("interrupted" in w for w in st2.warnings) and any("2.txt" in w for w in st2.warnings)
    assert not (d / store.META_DIR / store.JOURNAL).exists()


CHILD = textwrap.dedent("""
    import sys, time
    from lora_trainer.tags import store
    real = store._write_caption
    def slow(path, text):
        real(path, text)
        print("wrote", path.name, flush=True)
        time.sleep(0.01)   # a slow disk: the parent kills us between and during writes
    store._write_caption = slow
    st = store.load(sys.argv[1])
    st.apply({k: ["sks", "new", "caption", k, "x" * 2000] for k in st.keys()}, "rewrite")
    print("saving", flush=True)
    st.save()
    print("done", flush=True)
""")


@pytest.mark.parametrize("kill_after", [0, 7, 33])
def test_killed_save_leaves_old_or_new_never_truncated(tmp_path, kill_after):
    d = tmp_path / "data"
    n = 60
    old = {}
    for i in range(n):
        _img(d / f"{i:02d}.png")
        old[f"{i:02d}.png"] = f"sks, old caption {i}, " + "y" * (1000 + i)
        d.joinpath(f"{i:02d}.txt").write_text(old[f"{i:02d}.png"], encoding="utf-8")
    new = {k: ops.join_tags(["sks", "new", "caption", k, "x" * 2000]) for k in old}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(d)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    seen = 0
    deadline = time.time() + 60
    for line in proc.stdout:
        if line.startswith("wrote"):
            seen += 1
        if (line.startswith("saving") and kill_after == 0) or seen >= kill_after > 0 or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    got = {k: d.joinpath(k.replace(".png", ".txt")).read_text(encoding="utf-8") for k in old}
    states = ["new" if got[k] == new[k] else "old" if got[k] == old[k] else "BROKEN" for k in old]
    assert "BROKEN" not in states, [got[k][:80] for k, s in zip(old, states) if s == "BROKEN"]
    assert states.count("old") > 0, "the kill came after the save finished: the test proved nothing"
    assert states.count("new") >= kill_after
    # the previous captions were backed up before the first caption was replaced
    bk = store.backups(d)
    if states.count("new"):
        assert len(bk) == 1
        for k, s in zip(old, states):
            if s == "new":
                assert bk[0].joinpath(k.replace(".png", ".txt")).read_text(encoding="utf-8") == old[k]
    # loading again finishes the interrupted save (if its journal was written): no edit is lost
    st = store.load(d)
    assert len(st) == n                                   # a temp file left by the kill is never read as a caption
    final = {k: ops.join_tags(st.tags(k)) for k in old}
    if (states.count("new") or any("interrupted" in w for w in st.warnings)):
        assert final == new and any("interrupted" in w for w in st.warnings)
    else:
        assert final in (new, {k: ops.join_tags(ops.parse_tags(v)) for k, v in old.items()})
