"""The real CLIP BPE tokenizer, offline.

The toy model's text encoder uses the same 49,408-token vocabulary as Stable Diffusion 1.x, so a LoRA
trained on it is keyed and tokenized exactly like one trained on a real SD1 model. No model hub is
reachable, so the vocabulary comes from a package-registry file instead: OpenAI's
``bpe_simple_vocab_16e6.txt.gz`` (MIT), which ``open_clip`` ships inside its wheel. Where it is looked for:

1. inside an installed ``open_clip`` package (the WebUI host has open-clip-torch), found without
   importing it (importing open_clip pulls torchvision, which the standalone profile lacks);
2. in the cache folder (``$LORA_TRAINER_CACHE`` or ``~/.cache/lora_trainer``);
3. in the ``open_clip_torch`` wheel, fetched with ``pip download --no-deps`` (nothing is installed) and
   unpacked into the cache.

The ``.gz`` file is converted to ``vocab.json``/``merges.txt`` exactly the way OpenAI's SimpleTokenizer
slices it, and the result is always checked to have 49,408 tokens: offline, transformers may hand back a
two-token tokenizer without raising (OFFLINE.md), which would silently train on garbage.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Union

from ..errors import UserError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
# SimpleTokenizer keeps merges[1 : 49152 - 256 - 2 + 1]: line 0 is a header, then 48,894 merges.
N_MERGES = 49152 - 256 - 2
WHEEL_SPEC = "open_clip_torch==3.3.0"
PIP_COMMAND = f"python -m pip download --no-deps {WHEEL_SPEC} -d <folder>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Ids the real CLIP tokenizer gives; checked on every load, so a stale or foreign cache cannot slip by.
CHECK_TEXT, CHECK_IDS = "a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]

PathLike = Union[str, "os.PathLike[str]"]


def default_cache_dir() -> Path:
    """``$LORA_TRAINER_CACHE`` or ``~/.cache/lora_trainer``: outside the repository, never committed."""
    env = os.environ.get("LORA_TRAINER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lora_trainer"


def bytes_to_unicode() -> dict[int, str]:
    """The byte → printable character table of byte-level BPE (GPT-2 and CLIP use the same one).

    Printable Latin-1 bytes map to themselves; the others are shifted above 255 so that no token
    contains whitespace or control characters. The dict's ORDER matters: CLIP's first 256 ids are the
    printable bytes first, then the shifted ones.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    shifted = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return table


def convert_bpe(gz_path: PathLike) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) from OpenAI's ``.txt.gz``, in SimpleTokenizer's order (ids match the real CLIP)."""
    with gzip.open(gz_path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]
    if len(merges) != N_MERGES or any(len(m.split(" ")) != 2 for m in merges):
        raise UserError(f"{gz_path} is not the CLIP BPE vocabulary (expected {N_MERGES} merges)",
                        f"delete it and let it be fetched again ({PIP_COMMAND})")
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split(" ")) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _installed_open_clip_file() -> Optional[Path]:
    """The file inside an installed open_clip, located by import spec only (no import, no torch)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / BPE_FILE
        if candidate.is_file():
            return candidate
    return None


def _download_bpe(cache: Path, timeout: float = 300.0) -> Optional[Path]:
    """Fetch the open_clip wheel with pip (no install, no deps) and keep only the vocabulary file."""
    with tempfile.TemporaryDirectory(prefix="lora_trainer_bpe_") as tmp:
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            WHEEL_SPEC, "-d", tmp], check=True, timeout=timeout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except (subprocess.SubprocessError, OSError):
            return None
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                names = [n for n in zf.namelist() if n.endswith("/" + BPE_FILE)]
                if not names:
                    continue
                target = cache / BPE_FILE
                fd, part = tempfile.mkstemp(dir=cache, prefix=BPE_FILE + ".", suffix=".tmp")
                with os.fdopen(fd, "wb") as out, zf.open(names[0]) as src:
                    shutil.copyfileobj(src, out)
                os.chmod(part, 0o644)
                os.replace(part, target)
                return target
    return None


def find_bpe_file(cache_dir: Optional[PathLike] = None, allow_download: bool = True) -> Path:
    """Where the CLIP BPE ``.gz`` is: installed open_clip, then the cache, then a pip download."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = _installed_open_clip_file()
    if found is not None:
        return found
    if (cache / BPE_FILE).is_file():
        return cache / BPE_FILE
    if allow_download:
        cache.mkdir(parents=True, exist_ok=True)
        found = _download_bpe(cache)
        if found is not None:
            return found
    raise UserError(f"The CLIP vocabulary file {BPE_FILE} was not found (no open_clip package, "
                    f"not in {cache}) and could not be downloaded",
                    f"run `{PIP_COMMAND}` and put {BPE_FILE} from the wheel's open_clip/ folder "
                    f"into {cache}")


def ensure_tokenizer_files(cache_dir: Optional[PathLike] = None, allow_download: bool = True,
                           rebuild: bool = False) -> Path:
    """A folder holding ``vocab.json`` + ``merges.txt`` (HF format), built once in the cache."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache / "clip_tokenizer"
    if not rebuild and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    vocab, merges = convert_bpe(find_bpe_file(cache, allow_download))
    folder.mkdir(parents=True, exist_ok=True)
    # The HF slow tokenizer skips the first line of merges.txt (a "#version" header), like OpenAI's.
    _write_atomic(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_atomic(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    return folder


def _load(folder: Path, model_max_length: int):
    from transformers import CLIPTokenizer

    # from_pretrained on a local folder reads vocab.json/merges.txt in transformers 4.x (slow tokenizer)
    # and 5.x (tokenizers backend) alike; the constructors' signatures differ between the two.
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True,
                                         model_max_length=model_max_length, unk_token=EOS,
                                         bos_token=BOS, eos_token=EOS, pad_token=EOS)


def _is_real(tok) -> bool:
    return len(tok) == VOCAB_SIZE and list(tok(CHECK_TEXT).input_ids) == CHECK_IDS


def load_clip_tokenizer(cache_dir: Optional[PathLike] = None, allow_download: bool = True,
                        model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` with the real 49,408-token CLIP vocabulary, built offline.

    The result is checked (size 49,408 and known ids); a cache that fails the check is rebuilt once.
    Raises UserError (naming the missing file and the pip command) when the vocabulary cannot be had
    or the tokenizer still does not come out right.
    """
    folder = ensure_tokenizer_files(cache_dir, allow_download)
    tok = _load(folder, model_max_length)
    if not _is_real(tok):
        folder = ensure_tokenizer_files(cache_dir, allow_download, rebuild=True)
        tok = _load(folder, model_max_length)
    if not _is_real(tok):
        raise UserError(f"The CLIP tokenizer built from {folder} has {len(tok)} tokens and does not give "
                        f"the real CLIP ids (expected {VOCAB_SIZE} tokens)",
                        f"delete {folder} and {BPE_FILE} in the cache so they are fetched again "
                        f"(`{PIP_COMMAND}`)")
    return tok
