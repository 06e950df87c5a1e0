"""The offline CLIP tokenizer: real ids in both profiles, the 49,408 guard, and the UserError paths."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from lora_trainer.errors import UserError
from lora_trainer.toy import tokenizer as T


@pytest.fixture(scope="module")
def tok():
    # default cache ($LORA_TRAINER_CACHE or ~/.cache/lora_trainer) or the installed open_clip:
    # fetched at most once per machine
    return T.load_clip_tokenizer()


def test_real_clip_ids(tok):
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # caption-style text: commas and multi-word tags, the way the toy world writes them
    ids = tok("zkw, red, blue background, small, top left").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407
    assert tok.convert_ids_to_tokens(ids[1:-1]) == [
        "z", "kw</w>", ",</w>", "red</w>", ",</w>", "blue</w>", "background</w>", ",</w>",
        "small</w>", ",</w>", "top</w>", "left</w>"]


def test_padding_to_77_with_end_token(tok):
    ids = tok("red circle", padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert tok.model_max_length == 77 and len(ids) == 77
    assert ids[:4] == [49406, 736, 7117, 49407] and set(ids[4:]) == {49407}


def test_convert_matches_simple_tokenizer_layout():
    vocab, merges = T.convert_bpe(T.find_bpe_file())
    assert len(merges) == 48894 and len(vocab) == 49408
    assert vocab["!"] == 0 and vocab["a"] == 64 and vocab["a</w>"] == 320  # printable bytes come first
    assert vocab[chr(256)] == 188  # byte 0, the first shifted byte, follows the 188 printable ones
    assert vocab["".join(merges[0].split())] == 512
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_bytes_to_unicode_is_a_bijection_onto_printables():
    table = T.bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert all(not ch.isspace() and ch.isprintable() for ch in table.values())


def _fake_gz(path, n_merges):
    lines = ["#header"] + ["a b"] * n_merges
    with gzip.open(path, "wb") as f:
        f.write("\n".join(lines).encode())


def test_cache_is_built_atomically_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_installed_open_clip_file", lambda: None)
    (tmp_path / T.BPE_FILE).write_bytes(T.find_bpe_file().read_bytes())
    tok = T.load_clip_tokenizer(cache_dir=tmp_path, allow_download=False)
    assert tok("a photo of a cat").input_ids == T.CHECK_IDS
    folder = tmp_path / "clip_tokenizer"
    assert sorted(p.name for p in folder.iterdir()) == ["merges.txt", "vocab.json"]  # no temp leftovers
    assert (folder / "merges.txt").read_text().splitlines()[0].startswith("#version")
    mtime = (folder / "vocab.json").stat().st_mtime_ns
    T.load_clip_tokenizer(cache_dir=tmp_path, allow_download=False)
    assert (folder / "vocab.json").stat().st_mtime_ns == mtime


def test_broken_cache_is_rebuilt(tmp_path, monkeypatch):
    """The OFFLINE.md trap: a tokenizer that loads but is tiny must never be returned."""
    monkeypatch.setattr(T, "_installed_open_clip_file", lambda: None)
    (tmp_path / T.BPE_FILE).write_bytes(T.find_bpe_file().read_bytes())
    folder = tmp_path / "clip_tokenizer"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = T.load_clip_tokenizer(cache_dir=tmp_path, allow_download=False)
    assert len(tok) == 49408 and len(json.loads((folder / "vocab.json").read_text())) == 49408


def test_missing_file_raises_user_error_with_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_installed_open_clip_file", lambda: None)
    monkeypatch.setattr(T, "_download_bpe", lambda cache, timeout=300.0: None)  # registry unreachable
    with pytest.raises(UserError) as err:
        T.load_clip_tokenizer(cache_dir=tmp_path)
    assert T.BPE_FILE in err.value.message and str(tmp_path) in err.value.message
    assert "pip download --no-deps open_clip_torch==3.3.0" in err.value.hint


def test_wrong_vocabulary_file_raises_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_installed_open_clip_file", lambda: None)
    _fake_gz(tmp_path / T.BPE_FILE, 100)
    with pytest.raises(UserError, match="48894 merges"):
        T.load_clip_tokenizer(cache_dir=tmp_path, allow_download=False)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_TRAINER_CACHE", str(tmp_path / "c"))
    assert T.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LORA_TRAINER_CACHE")
    assert T.default_cache_dir() == T.Path.home() / ".cache" / "lora_trainer"


@pytest.mark.slow
def test_download_from_the_registry_extracts_only_the_vocabulary(tmp_path):
    """The fallback path for real: pip download of the open_clip wheel (no install), one file kept."""
    if os.environ.get("LORA_TRAINER_NO_NETWORK"):
        pytest.skip("LORA_TRAINER_NO_NETWORK is set")
    got = T._download_bpe(tmp_path, timeout=120)
    assert got == tmp_path / T.BPE_FILE
    assert [p.name for p in tmp_path.iterdir()] == [T.BPE_FILE]
    vocab, merges = T.convert_bpe(got)
    assert len(vocab) == 49408 and vocab["cat</w>"] == 2368
