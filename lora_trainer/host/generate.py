"""Test images through the WebUI's own txt2img, and LoRA files into the WebUI's Lora folder.

The builtin Lora extension applies a file named in the prompt (``<lora:name:w>``), so a LoRA is first copied
into the Lora folder (``--lora-dir`` aware) under a name that changes with its content: the loader keeps a
re-written file's old weights merged (WEBUI_API.md §6.2), so a name is never reused for other weights.
``ss_output_name`` (the card's alias) is set to the new name so aliases never collide.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from contextlib import closing
from pathlib import Path
from typing import Optional, Sequence

from ..config import sanitize_name
from ..errors import Cancelled, UserError
from .backend import detached_adapters, restore_builtin_lora
from .env import cmd_opt, lora_dir, lora_networks, m, setting
from .progress import protected_state

log = logging.getLogger("lora_trainer")

TEST_SUBDIR = "lora_trainer_tests"
_LORA_EXTS = (".safetensors", ".pt", ".ckpt")


def file_addnet_hash(path: Path) -> str:
    """kohya's addnet hash of a .safetensors file (sha256 after the header), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        fh.seek(8 + n)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def refresh_loras() -> bool:
    """Re-scan the Lora folder (what the Extra Networks "Refresh" and ``/sdapi/v1/refresh-loras`` do)."""
    nets = lora_networks()
    if nets is None or not hasattr(nets, "list_available_networks"):
        return False
    try:
        nets.list_available_networks()
        return True
    except Exception:  # noqa: BLE001 - <lora:...> still finds new files at generation time
        log.warning("refreshing the Lora list failed", exc_info=True)
        return False


def _taken_names() -> dict[str, Path]:
    """Every network name (file stem) the loader knows, in the Lora folder and the LyCORIS one."""
    out: dict[str, Path] = {}
    for folder in (lora_dir(), cmd_opt("lyco_dir_backcompat")):
        if folder and os.path.isdir(folder):
            for root, _dirs, files in os.walk(folder, followlinks=True):
                for f in files:
                    stem, ext = os.path.splitext(f)
                    if ext.lower() in _LORA_EXTS:
                        out.setdefault(stem, Path(root) / f)
    return out


def _copy_as(src: Path, dst: Path, name: str, sidecar: bool) -> None:
    """Write ``src``'s tensors to ``dst`` with ``ss_output_name``/title = ``name`` (the tensor data, and so the
    Lora hash, are unchanged); with ``sidecar`` also ``<name>.json``."""
    from ..training.saving import read_lora, save_lora
    from ..workspace import write_json

    tensors, md = read_lora(src)
    md.update({"ss_output_name": name, "modelspec.title": name})
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_lora(dst, tensors, md)
    src_json = src.with_suffix(".json")
    if sidecar and src_json.is_file():
        import json

        write_json(dst.with_suffix(".json"), json.loads(src_json.read_text(encoding="utf-8")))


def _data_bytes(path: Path) -> int:
    """Bytes after a .safetensors header: equal for two files with the same tensors, whatever metadata each
    carries, so it picks the few files worth hashing."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
        return path.stat().st_size - 8 - n
    except OSError:
        return -1


def same_weights(lora_file: Path, digest: Optional[str] = None) -> Optional[Path]:
    """A file the Lora loader already knows with exactly ``lora_file``'s tensors (a published copy, an earlier
    test copy), or None. Only files of the same data size are hashed. ``digest``: ``lora_file``'s, if known."""
    size = _data_bytes(lora_file)
    for path in _taken_names().values():
        if path.suffix != ".safetensors" or _data_bytes(path) != size:
            continue
        digest = digest or file_addnet_hash(lora_file)
        if file_addnet_hash(path) == digest:
            return path
    return None


def test_copy_path(lora_file: Path, digest: Optional[str] = None) -> Path:
    """Where ``stage_for_test`` puts its copy of ``lora_file``: named after its name and content."""
    lora_file = Path(lora_file)
    name = f"{sanitize_name(lora_file.stem)}-{(digest or file_addnet_hash(lora_file))[:8]}"
    return lora_dir() / TEST_SUBDIR / f"{name}.safetensors"


def test_copies(lora_files: Sequence[Path]) -> list[Path]:
    """The test copies that exist for these files (a project's disk use; deleted with the project)."""
    folder = lora_dir() / TEST_SUBDIR
    if not folder.is_dir():
        return []
    stems = {sanitize_name(Path(f).stem) for f in lora_files}
    # the name says whose it may be; the content hash decides (two projects may name files alike)
    candidates = [c for c in folder.glob("*.safetensors") if c.stem.rsplit("-", 1)[0] in stems]
    if not candidates:
        return []
    wanted = {test_copy_path(Path(f)) for f in lora_files if Path(f).is_file()}
    return sorted(c for c in candidates if c in wanted)


def stage_for_test(lora_file: Path) -> str:
    """The network name to put in ``<lora:…>`` for ``lora_file``: a file the loader already has with the same
    weights (the published copy: no second copy of the same bytes), else a copy in
    ``<Lora>/lora_trainer_tests/`` named after its content (a same file is reused, never re-written)."""
    lora_file = Path(lora_file)
    digest = file_addnet_hash(lora_file)
    target = test_copy_path(lora_file, digest)
    if target.is_file():
        return target.stem
    existing = same_weights(lora_file, digest)
    if existing is not None:
        return existing.stem
    _copy_as(lora_file, target, target.stem, sidecar=False)
    refresh_loras()
    return target.stem


def publish(lora_file: Path, name: str, always: bool = False) -> Optional[Path]:
    """Copy a finished LoRA into the Lora folder under a unique name (with its sidecar), refresh the list.

    A file with identical weights already there is reused; a name in use for other weights gets ``-2``,
    ``-3``, … (a re-written file would keep its old weights merged in the WebUI). None when the setting
    ``lora_trainer_publish`` is off, unless ``always`` (the user asked for this file).
    """
    if not always and not setting("lora_trainer_publish"):
        return None
    lora_file = Path(lora_file)
    digest = file_addnet_hash(lora_file)
    taken = _taken_names()
    base = sanitize_name(name)
    i = 1
    while True:
        stem = base if i == 1 else f"{base}-{i}"
        existing = taken.get(stem)
        if existing is None:
            break
        if existing.suffix == ".safetensors" and file_addnet_hash(existing) == digest:
            return existing
        i += 1
    target = lora_dir() / f"{stem}.safetensors"
    _copy_as(lora_file, target, stem, sidecar=True)
    refresh_loras()
    log.info("published %s as %s", lora_file.name, target)
    return target


def with_lora_tag(info: str, prompt: str, text: str) -> str:
    """The infotext with the prompt as we sent it, ``<lora:…>`` included.

    Without txt2img's scripts (``p.scripts`` is None for us), ``processing.process_images_inner`` never puts
    the prompts back after ``parse_extra_network_prompts`` stripped the extra networks from them, so the
    infotext's first line is the prompt without its ``<lora:…>``, and PNG Info → Send to txt2img would
    draw without the LoRA. Only that exact first line is replaced.
    """
    head, sep, rest = info.partition("\n")
    if head.strip() == prompt.strip() and head != text:
        return text + sep + rest
    return info


def host_samplers() -> list[str]:
    """The WebUI's sampler names as its txt2img tab lists them (``modules/sd_samplers.py: visible_samplers``:
    all samplers less those hidden in Settings → Sampler parameters)."""
    return [s.name for s in m("sd_samplers").visible_samplers()]


class HostGenerator:
    """``generate.Generator`` over the WebUI's ``process_images``.

    Our training adapters are detached for the call and re-attached after; the builtin Lora's networks are
    unloaded and the base weights restored after (so a following training step or job starts clean);
    ``shared.state``'s progress fields are kept. Each image carries its infotext in ``image.info["parameters"]``
    (also in ``self.infotexts``).
    """

    def __init__(self, sampler_name: Optional[str] = None, keep_training_adapters: bool = False):
        """``keep_training_adapters``: for samples during training, which must show the LoRA as it is."""
        self.sampler_name = sampler_name
        self.keep_training_adapters = keep_training_adapters
        self.infotexts: list[str] = []
        self.prompts: list[str] = []

    def generate(self, prompts: Sequence[str], *, negative: str = "", seeds: Sequence[int] = (0,), steps: int = 20,
                 cfg_scale: float = 7.0, size: int = 512, lora: Optional[str] = None, weight: float = 1.0,
                 sampler: Optional[str] = None) -> list:
        processing, shared = m("processing"), m("shared")
        sampler = sampler or self.sampler_name or setting("lora_trainer_test_sampler")
        if sampler not in host_samplers():
            raise UserError(f"the WebUI has no sampler {sampler!r}", "choose one of: " + ", ".join(host_samplers()))
        name = stage_for_test(Path(lora)) if lora else None
        model = shared.sd_model
        images: list = []
        adapters = contextlib.nullcontext() if self.keep_training_adapters else detached_adapters(model)
        with adapters, protected_state():
            try:
                for prompt in prompts:
                    text = f"{prompt} <lora:{name}:{weight:g}>" if name else prompt
                    for seed in seeds:
                        p = processing.StableDiffusionProcessingTxt2Img(
                            sd_model=model, prompt=text, negative_prompt=negative, seed=int(seed),
                            sampler_name=sampler, steps=int(steps), cfg_scale=float(cfg_scale), width=int(size),
                            height=int(size), batch_size=1, n_iter=1, do_not_save_samples=True,
                            do_not_save_grid=True)
                        if hasattr(p, "scheduler"):  # 1.9+: the sampler's own schedule, said so (not None)
                            p.scheduler = "Automatic"
                        with closing(p):
                            processed = processing.process_images(p)
                        if shared.state.interrupted:
                            raise Cancelled()
                        for img, info in zip(processed.images, processed.infotexts):
                            info = with_lora_tag(info, prompt, text) if name else info
                            img.info["parameters"] = info
                            images.append(img)
                            self.infotexts.append(info)
                            self.prompts.append(text)
            finally:
                restore_builtin_lora(model)
        return images
