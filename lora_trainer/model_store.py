"""The model store: the models a step can fetch (taggers, background removers), where each lives, and
``ensure(model_id)`` — download it on the user's say-so, with progress, resumable, hash-checked.

Nothing here runs unless the user asked for a download (``models download NAME``, or a step's download
option): a step that lacks its model still fails fast with ``missing_text``, which names each file, its URL
and the folder to put it in by hand.

Hub-hosted files (the taggers, base models by hub id) go through ``huggingface_hub.hf_hub_download`` where
the library is installed (``hub_fetch``): into a staging folder, then the store checks the sha256 (the hub's
``X-Linked-Etag``, which the library reads too) and renames atomically — neither library version checks it
before the file appears under its name. The store's own urllib client is the fallback where the library is
missing (or ``LORA_TRAINER_NO_HF_HUB=1``) and the path for files outside the hub (rembg's GitHub release):
it speaks the hub's routes (``{HF_ENDPOINT}/{repo}/resolve/{rev}/{file}``, ``X-Linked-Etag`` = the LFS file's
sha256, ``ETag`` = the git blob sha1 of a small file), honours ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``, writes
``<name>.part`` (never the final name) and resumes it with a ``Range`` request, checks the hash, then renames
atomically.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import hub_fetch
from .errors import Cancelled, UserError

CONNECT_TIMEOUT = 4.0   # seconds: a server that is down, unreachable or silent fails within 5 s
READ_TIMEOUT = 30.0     # seconds without a byte before a download counts as stalled (it resumes next time)
CHUNK = 1 << 20
HUB = "https://huggingface.co"
REMBG_RELEASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"

HOST_MODELS_DIR: list[Path] = []
"""The host's ``models`` folder (the WebUI sets it), where its users keep models; empty standalone."""


@dataclass(frozen=True)
class ModelFile:
    name: str                  # the file's name on disk
    remote: str                # hub: the path in the repository; url: the URL's file name
    size: int = 0              # published size in bytes (0 = unknown: the server's header is used)
    sha256: str = ""           # published sha256 ("" = the hub's X-Linked-Etag / ETag is used)
    md5: str = ""              # rembg publishes md5 sums only


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: str                  # "tagger" | "background"
    files: tuple[ModelFile, ...]
    repo: str = ""             # hub repository (kind tagger); "" = a plain URL under ``base_url``
    revision: str = "main"
    base_url: str = ""         # for files outside the hub (rembg's GitHub release)
    licence: str = ""
    about: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _wd(repo_name: str, model_size: int, about: str) -> ModelSpec:
    return ModelSpec(repo_name, "tagger", (ModelFile("model.onnx", "model.onnx", model_size),
                                           ModelFile("selected_tags.csv", "selected_tags.csv", 308468)),
                     repo=f"SmilingWolf/{repo_name}", licence="Apache-2.0", about=about)


def _rembg(name: str, remote: str, size: int, md5: str, licence: str, about: str) -> ModelSpec:
    return ModelSpec(name, "background", (ModelFile(f"{name}.onnx", remote, size, md5=md5),),
                     base_url=REMBG_RELEASE, licence=licence, about=about)


# Sizes are the published ones, rounded where only that is known (they size the progress bar; the server's
# Content-Length decides). Hashes: rembg's md5s are copied from rembg 2.0.69's sessions; the taggers' sha256
# comes from the hub's LFS metadata at download time (it could not be verified here, offline).
CATALOGUE: dict[str, ModelSpec] = {s.id: s for s in (
    _wd("wd-vit-tagger-v3", 378_000_000, "WD v3 ViT tagger: fast, the default"),
    _wd("wd-swinv2-tagger-v3", 467_000_000, "WD v3 SwinV2 tagger: a little more accurate"),
    _wd("wd-eva02-large-tagger-v3", 1_260_000_000, "WD v3 EVA02-Large tagger: the most accurate, slowest"),
    _rembg("u2net", "u2net.onnx", 175_997_641, "60024c5c889badc19c04ad937298a77b", "Apache-2.0",
           "general objects"),
    _rembg("u2netp", "u2netp.onnx", 4_574_861, "8e83ca70e441ab06c318d82300c84806", "Apache-2.0",
           "small and fast, rougher edges"),
    _rembg("isnet-general-use", "isnet-general-use.onnx", 178_648_008, "fc16ebd8b0c10d971d3513d564d01e29",
           "Apache-2.0", "general objects, finer edges"),
    _rembg("birefnet-portrait", "BiRefNet-portrait-epoch_150.onnx", 973_000_000,
           "c3a64a6abf20250d090cd055f12a3b67", "MIT", "people: portrait-grade hair and edges"),
    _rembg("birefnet-general", "BiRefNet-general-epoch_244.onnx", 973_000_000,
           "7a35a0141cbbc80de11d9c9a28f52697", "MIT", "general objects, high quality"),
)}


class ModelOffline(UserError):
    """The model is missing and cannot be fetched now (offline, server down, downloads switched off)."""


def get_spec(model_id: str) -> ModelSpec:
    spec = CATALOGUE.get(model_id)
    if spec is None:
        import difflib

        close = difflib.get_close_matches(model_id, list(CATALOGUE), n=1)
        raise UserError(f"unknown model {model_id!r} (known: {', '.join(CATALOGUE)})",
                        f"did you mean {close[0]!r}?" if close else "run `models list` to see them")
    return spec


# --------------------------------------------------------------------------------------------- folders

def cache_root() -> Path:
    """``$LORA_TRAINER_CACHE`` or ``~/.cache/lora_trainer``: the standalone model folders are under it."""
    env = os.environ.get("LORA_TRAINER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lora_trainer"


def u2net_home() -> Path:
    """rembg 2.0.69's own folder: ``$U2NET_HOME``, else ``$XDG_DATA_HOME/.u2net`` or ``~/.u2net``."""
    default = os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net")
    return Path(os.path.expanduser(os.getenv("U2NET_HOME", default)))


def background_dirs() -> list[Path]:
    """Where rembg models may be, in order: ``$U2NET_HOME`` when set, the host's ``models/u2net`` (the
    WebUI rembg extension's folder), rembg's default ``~/.u2net``. The first is where a download goes."""
    dirs = [Path(os.path.expanduser(os.environ["U2NET_HOME"]))] if os.environ.get("U2NET_HOME") else []
    dirs += [h / "u2net" for h in HOST_MODELS_DIR]
    dirs.append(u2net_home())
    return list(dict.fromkeys(dirs))


def candidate_dirs(spec: ModelSpec) -> list[Path]:
    """Where the model may be, in order; the first is where a download goes."""
    if spec.kind == "background":
        dirs = background_dirs()
    else:
        dirs = [h / "wd14" / spec.id for h in HOST_MODELS_DIR] + [cache_root() / "models" / "wd14" / spec.id]
    return list(dict.fromkeys(dirs))


def target_dir(spec: ModelSpec) -> Path:
    return candidate_dirs(spec)[0]


def _complete(folder: Path, spec: ModelSpec) -> bool:
    return all((folder / f.name).is_file() and (folder / f.name).stat().st_size > 0 for f in spec.files)


def find(model_id: str) -> Optional[Path]:
    """The folder holding every file of the model, or None. Never touches the network."""
    spec = get_spec(model_id)
    return next((d for d in candidate_dirs(spec) if _complete(d, spec)), None)


def file_url(spec: ModelSpec, f: ModelFile) -> str:
    if spec.repo:
        endpoint = (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
        return f"{endpoint}/{spec.repo}/resolve/{spec.revision}/{f.remote}"
    base = os.environ.get("LORA_TRAINER_REMBG_URL") or spec.base_url  # a mirror of rembg's release files
    return f"{base.rstrip('/')}/{f.remote}"


def missing_text(model_id: str) -> str:
    """What to do by hand: each missing file, its URL and the folder it goes in."""
    spec = get_spec(model_id)
    folder = target_dir(spec)
    files = [f for f in spec.files if not (folder / f.name).is_file()] or list(spec.files)
    where = "; ".join(f"{f.name} from {file_url(spec, f)}" for f in files)
    return (f"download it with `python -m lora_trainer models download {spec.id}`, or put {where} "
            f"in {folder}")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def describe(model_id: str) -> dict:
    """One row of ``models list``: id, kind, where, on disk or not, sizes, licence."""
    spec = get_spec(model_id)
    folder = find(model_id)
    on_disk = sum((folder / f.name).stat().st_size for f in spec.files) if folder else 0
    return {"id": spec.id, "kind": spec.kind, "downloaded": folder is not None,
            "folder": str(folder or target_dir(spec)), "size": spec.size, "on_disk": on_disk,
            "licence": spec.licence, "about": spec.about,
            "source": f"hf.co/{spec.repo}" if spec.repo else spec.base_url}


def delete(model_id: str) -> list[Path]:
    """Remove the model's files (and partial downloads) from every folder it is in; the files removed."""
    spec = get_spec(model_id)
    gone = []
    for d in candidate_dirs(spec):
        for f in spec.files:
            for p in (d / f.name, _part(d, f), _part(d, f).with_suffix(".part.json")):
                if p.is_file():
                    p.unlink()
                    gone.append(p)
        staging = hub_fetch.staging_dir(d)
        if staging.is_dir():  # the library's partial downloads
            import shutil

            gone += [p for p in staging.rglob("*") if p.is_file()]
            shutil.rmtree(staging)
        if spec.kind == "tagger" and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return gone


# --------------------------------------------------------------------------------------------- download

Progress = Callable[[dict], None]


def _part(folder: Path, f: ModelFile) -> Path:
    return folder / f"{f.name}.part"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # the hub's metadata is on the first answer, not the CDN's
        return None


def _head(url: str) -> dict:
    """The file's metadata as the hub gives it: expected size and hash, from the first (unredirected) answer."""
    req = urllib.request.Request(url, method="HEAD", headers=_headers(url))
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        resp = opener.open(req, timeout=CONNECT_TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code in (301, 302, 303, 307, 308):
            resp = exc
        else:
            raise
    h = resp.headers
    etag = (h.get("X-Linked-Etag") or h.get("ETag") or "").strip().strip('"').removeprefix("W/").strip('"')
    size = h.get("X-Linked-Size") or (h.get("Content-Length") if resp.status == 200 else None)
    return {"etag": etag.lower(), "size": int(size) if size and size.isdigit() else 0}


def _headers(url: str = "") -> dict:
    """Our User-Agent, and ``HF_TOKEN`` for the hub endpoint only (never for rembg's or a CDN's host)."""
    h = {"User-Agent": "lora-trainer"}
    token = os.environ.get("HF_TOKEN")
    endpoint = (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    if token and (url == endpoint or url.startswith(endpoint + "/")):
        h["Authorization"] = f"Bearer {token}"
    return h


class _SameHostAuth(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlparse(newurl).netloc != urllib.parse.urlparse(req.full_url).netloc:
            new.remove_header("Authorization")  # the hub's CDN gets a signed URL, not the user's token
        return new


def _expected_hash(f: ModelFile, meta: dict) -> tuple[str, str]:
    """(algorithm, hex) to check: the catalogue's, else the hub's etag (sha256 of an LFS file, git sha1 of a
    small one), else nothing."""
    if f.sha256:
        return "sha256", f.sha256.lower()
    if f.md5:
        return "md5", f.md5.lower()
    etag = meta.get("etag", "")
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        return "sha256", etag
    if re.fullmatch(r"[0-9a-f]{40}", etag):
        return "git-sha1", etag
    return "", ""


def file_hash(path: Path, algo: str) -> str:
    size = path.stat().st_size
    h = hashlib.sha1(b"blob %d\0" % size) if algo == "git-sha1" else hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, expect: dict, on_bytes: Callable[[int], None],
           should_stop: Callable[[], bool]) -> None:
    """Append to ``part`` from where it stops (``Range``), or start over if the server ignores the range
    or the partial file belongs to another version of the file."""
    meta_file = part.with_suffix(".part.json")
    if part.exists():
        try:
            same = json.loads(meta_file.read_text(encoding="utf-8")) == expect
        except (OSError, ValueError):
            same = False
        if not same:
            part.unlink()
    part.parent.mkdir(parents=True, exist_ok=True)
    meta_file.write_text(json.dumps(expect), encoding="utf-8")
    have = part.stat().st_size if part.exists() else 0
    if expect.get("size") and have >= expect["size"]:
        return
    headers = _headers(url)
    if have:
        headers["Range"] = f"bytes={have}-"
    # the HEAD before already proved the server answers within CONNECT_TIMEOUT; reads may pause longer
    opener = urllib.request.build_opener(_SameHostAuth)
    try:
        resp = opener.open(urllib.request.Request(url, headers=headers), timeout=READ_TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file is already whole (size unknown): the hash decides
            return
        raise
    with resp:
        if have and resp.status != 206:  # the server sent the whole file: start again
            have = 0
        on_bytes(have)
        with open(part, "ab" if have else "wb") as out:
            while True:
                if should_stop():
                    raise Cancelled("download cancelled (the partial file is kept and resumes next time)")
                block = resp.read(CHUNK)
                if not block:
                    break
                out.write(block)
                on_bytes(len(block))
            out.flush()
            os.fsync(out.fileno())
        if resp.length:  # http.client ends a body cut short by the server without an error
            raise ConnectionError(f"the connection closed {resp.length} bytes before the end")


def _check_and_move(staged: Path, final: Path, f: ModelFile, meta: dict, expect: tuple[str, str], label: str,
                    missing: str) -> None:
    """Size and hash of the staged file against the published ones, then the atomic rename; a wrong file is
    deleted (nothing appears under the final name)."""
    algo, digest = expect
    got = staged.stat().st_size
    if meta["size"] and got != meta["size"]:
        staged.unlink()
        raise UserError(f"{f.name} of {label}: got {got} bytes, the server announced {meta['size']}",
                        "run the download again")
    if algo:
        actual = file_hash(staged, algo)
        if actual != digest:
            staged.unlink()
            raise UserError(f"{f.name} of {label} is corrupt: its {algo} is {actual}, the published one is "
                            f"{digest}; the file was deleted",
                            f"run the download again; if it fails again, {missing}")
    os.replace(staged, final)


def _fetch_with_library(hub: tuple, url: str, folder: Path, f: ModelFile, meta: dict, expect: tuple[str, str],
                        label: str, missing: str, on_bytes, should_stop, endpoint: str) -> None:
    """One hub file through ``huggingface_hub`` into the staging folder, then checked and moved."""
    repo, revision, filename = hub
    try:
        staged = hub_fetch.download(repo, revision, filename, folder, endpoint, CONNECT_TIMEOUT, on_bytes,
                                    should_stop, lambda: Cancelled("download cancelled (run it again to go on)"))
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's errors are its HTTP client's
        code = hub_fetch.is_http_error(exc)
        if code is not None:
            raise UserError(f"{url} answered {code}", missing) from None
        raise ModelOffline(f"download of {f.name} for {label} broke off ({exc}); run it again to resume",
                           missing) from None
    _check_and_move(staged, folder / f.name, f, meta, expect, label, missing)
    meta_dir = hub_fetch.staging_dir(folder)
    if not any(p.is_file() and ".cache" not in p.relative_to(meta_dir).parts for p in meta_dir.rglob("*")):
        import shutil

        # done: the library's bookkeeping goes too, with what a killed run of huggingface_hub 2.x left behind
        # (its temporary files are per attempt, never resumed); the files are fetched in order, so no later
        # file's partial download is in there yet
        shutil.rmtree(meta_dir, ignore_errors=True)


def _download_files(label: str, items: list, progress: Optional[Progress], should_stop: Callable[[], bool],
                    missing: str) -> None:
    """Fetch ``items`` — ``(url, folder, ModelFile)`` — one after the other, progress over all of them."""
    if offline():
        raise ModelOffline(f"{label} is not downloaded and downloads are off (HF_HUB_OFFLINE is set)", missing)
    endpoint = (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    lib = hub_fetch.available()
    hub_parts = [hub_fetch.split_url(url, endpoint) if lib else None for url, _folder, _f in items]
    try:  # the hub's HEAD (X-Linked-Etag/-Size, as hf_hub_download reads them) with our 4 s timeout: the
        # library's own retries on a server that is down take 20 s and more (huggingface_hub 0.36)
        metas = [_head(url) for url, _folder, _f in items]
    except urllib.error.HTTPError as exc:
        raise UserError(f"{exc.url or items[0][0]} answered {exc.code} {exc.reason}", missing) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ModelOffline(f"cannot reach the server for {label} ({getattr(exc, 'reason', exc)})",
                           missing) from None
    total = sum(m["size"] or f.size for (_u, _d, f), m in zip(items, metas))
    state = {"done": 0}
    for (url, folder, f), meta, hub in zip(items, metas, hub_parts):
        algo, digest = _expected_hash(f, meta)

        def on_bytes(n: int, name=f.name) -> None:
            state["done"] += n
            if progress:
                progress({"model": label, "file": name, "done": state["done"], "total": total})

        if should_stop():
            raise Cancelled("download cancelled (the partial file is kept and resumes next time)")
        if hub:
            _fetch_with_library(hub, url, folder, f, meta, (algo, digest), label, missing, on_bytes, should_stop,
                                endpoint)
            continue
        part = _part(folder, f)
        try:
            _fetch(url, part, {"url": url, "hash": digest, "size": meta["size"]}, on_bytes, should_stop)
        except urllib.error.HTTPError as exc:
            raise UserError(f"{url} answered {exc.code} {exc.reason}", missing) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # lost midway: .part resumes
            raise ModelOffline(f"download of {f.name} for {label} broke off ({getattr(exc, 'reason', exc)}); "
                               f"run it again to resume", missing) from None
        try:
            _check_and_move(part, folder / f.name, f, meta, (algo, digest), label, missing)
        finally:
            if not part.exists():  # moved into place, or deleted as wrong: its resume record goes too
                part.with_suffix(".part.json").unlink(missing_ok=True)


def ensure(model_id: str, progress: Optional[Progress] = None,
           should_stop: Callable[[], bool] = lambda: False) -> Path:
    """The folder holding the model's files, downloading what is missing. ``progress`` gets
    ``{"model", "file", "done", "total"}`` (bytes over the whole model) as bytes arrive; ``should_stop``
    returning True cancels (``Cancelled``; the partial file stays and resumes). Raises ``ModelOffline``
    (one message: each file, its URL, the folder) when the network or ``HF_HUB_OFFLINE`` forbids it, and
    ``UserError`` when a file's hash is wrong (nothing is left under its name)."""
    spec = get_spec(model_id)
    found = find(model_id)
    if found is not None:
        return found
    folder = target_dir(spec)
    todo = [(file_url(spec, f), folder, f) for f in spec.files if not (folder / f.name).is_file()]
    _download_files(f"model {spec.id}", todo, progress, should_stop, missing_text(model_id))
    return folder


# --------------------------------------------------------------------------------------------- base models

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w.-]+)?$")
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|ema|non_ema)\.")
BASE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "text_encoder_2", "tokenizer_2")
_WEIGHTS = ("unet", "vae", "text_encoder")


def is_remote_base(spec: str) -> bool:
    """A ``--base-model`` that names a hub repository (``owner/name[@revision]``, diffusers layout) or the
    URL of one ``.safetensors`` file, rather than a local path."""
    if spec.startswith(("https://", "http://")):
        return True
    return bool(_REPO_ID.match(spec)) and not Path(spec).expanduser().exists()


def base_dir(spec: str) -> Path:
    root = cache_root() / "models" / "base"
    if spec.startswith(("https://", "http://")):
        return root / ("url-" + hashlib.sha1(spec.encode()).hexdigest()[:12])
    return root / spec.replace("/", "--").replace("@", "--")


def _base_url_file(url: str) -> ModelFile:
    name = urllib.parse.unquote(urllib.parse.urlparse(url).path.rsplit("/", 1)[-1])
    if not name.endswith(".safetensors") or "/" in name or name.startswith("."):
        raise UserError(f"{url} is not the URL of a .safetensors file",
                        "give --base-model a URL ending in .safetensors, a hub repository id or a local path")
    return ModelFile(name, name)


def _repo_files(repo: str, revision: str, missing: str) -> list[str]:
    """The files of the repository a diffusers model needs: configs and non-variant .safetensors weights."""
    endpoint = (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    url = f"{endpoint}/api/models/{repo}/revision/{revision}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_headers(url)),
                                    timeout=CONNECT_TIMEOUT) as r:
            names = [s["rfilename"] for s in json.load(r).get("siblings", [])]
    except urllib.error.HTTPError as exc:
        raise UserError(f"{url} answered {exc.code} {exc.reason}",
                        "check the repository id (owner/name) and its access rights (HF_TOKEN)") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ModelOffline(f"cannot reach the server for base model {repo} ({getattr(exc, 'reason', exc)})",
                           missing) from None
    if "model_index.json" not in names:
        raise UserError(f"{repo} is not a diffusers model (no model_index.json)",
                        "give a repository in the diffusers layout, or the URL of a single .safetensors file")
    keep = ["model_index.json"]
    for n in names:
        top, _, rest = n.partition("/")
        if top in BASE_PARTS and "/" not in rest and not _VARIANT.search(rest) and \
                rest.endswith((".json", ".txt", ".safetensors")):
            keep.append(n)
    for part in _WEIGHTS:
        if part in {n.split("/")[0] for n in names} and not any(k.startswith(part + "/") and
                                                                  k.endswith(".safetensors") for k in keep):
            raise UserError(f"{repo} has no .safetensors weights in {part}/",
                            "LoRA Trainer loads no pickle weights (.bin): pick a repository with safetensors")
    return keep


def resolve_base_model(spec: str, progress: Optional[Progress] = None,
                       should_stop: Callable[[], bool] = lambda: False) -> str:
    """A local path for ``--base-model``: a local path as given; a hub repository id or a ``.safetensors``
    URL from the cache, downloaded there first when it is not yet (the user named it: that is the say-so)."""
    if not is_remote_base(spec):
        return spec
    folder = base_dir(spec)
    if spec.startswith(("https://", "http://")):
        f = _base_url_file(spec)
        if not (folder / f.name).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            _download_files(f"base model {f.name}", [(spec, folder, f)], progress, should_stop,
                            f"put {f.name} from {spec} in {folder}, or give --base-model its local path")
        return str(folder / f.name)
    done = folder / ".lt-complete"
    if done.is_file():
        return str(folder)
    repo, _, revision = spec.partition("@")
    revision = revision or "main"
    endpoint = (os.environ.get("HF_ENDPOINT") or HUB).rstrip("/")
    missing = (f"copy the repository {endpoint}/{repo} (model_index.json and the unet, vae, text_encoder, "
               f"tokenizer, scheduler folders) into {folder}, or give --base-model a local path")
    if offline():
        raise ModelOffline(f"base model {repo} is not downloaded and downloads are off (HF_HUB_OFFLINE is set)",
                           missing)
    items = []
    for name in _repo_files(repo, revision, missing):
        sub, _, leaf = name.rpartition("/")
        target = folder / sub if sub else folder
        target.mkdir(parents=True, exist_ok=True)
        if not (target / leaf).is_file():
            items.append((f"{endpoint}/{repo}/resolve/{revision}/{name}", target, ModelFile(leaf, name)))
    _download_files(f"base model {repo}", items, progress, should_stop, missing)
    done.write_text(json.dumps({"repo": repo, "revision": revision}), encoding="utf-8")
    return str(folder)


def tqdm_progress(desc: str) -> Progress:
    """A progress callback drawing a tqdm bar on stderr (the CLI's downloads)."""
    import sys

    from tqdm import tqdm

    bar = {}

    def update(ev: dict) -> None:
        if "b" not in bar:
            bar["b"] = tqdm(total=ev["total"] or None, desc=desc, unit="B", unit_scale=True, file=sys.stderr,
                            disable=None, leave=True)
        bar["b"].n = ev["done"]
        bar["b"].refresh()
        if ev["total"] and ev["done"] >= ev["total"]:
            bar["b"].close()

    return update


def cached_base_models() -> list[dict]:
    """The base models downloaded into the cache: ``{id, folder, on_disk}`` (complete downloads only)."""
    root = cache_root() / "models" / "base"
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        marker = d / ".lt-complete"
        files = [p for p in d.rglob("*") if p.is_file() and not p.name.endswith((".part", ".part.json"))]
        if marker.is_file():
            ident = json.loads(marker.read_text(encoding="utf-8")).get("repo", d.name)
        elif any(p.suffix == ".safetensors" for p in files) and d.name.startswith("url-"):
            ident = next(p.name for p in files if p.suffix == ".safetensors")
        else:
            continue
        out.append({"id": ident, "kind": "base", "folder": str(d), "downloaded": True,
                    "on_disk": sum(p.stat().st_size for p in files)})
    return out


def delete_base(spec: str) -> list[Path]:
    """Remove a downloaded base model (its cache folder)."""
    import shutil

    folder = base_dir(spec)
    if not folder.is_dir():
        return []
    gone = [p for p in folder.rglob("*") if p.is_file()]
    shutil.rmtree(folder)
    return gone
