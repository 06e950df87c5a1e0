"""The WebUI's interrogators as taggers: ``deepbooru`` (DeepDanbooru) and ``clip`` (BLIP caption + CLIP flavours).

Both use the host's own models. Offline, the WebUI would try to download a missing model at first use and
hang or print "<error>"; ``available()`` checks the files first and says which is missing and where it
goes, so the Auto-tag step fails at once with that message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from ..tagging.base import TagResult
from .env import cmd_opt, m, models_path
from .progress import protected_state

_RANKED = re.compile(r"^\((.*):(-?[0-9.]+)\)$")
_MISSING = object()


class _Options:
    """Set some ``shared.opts`` values for a block (straight in ``opts.data``: no onchange callbacks run)."""

    def __init__(self, **values: Any):
        self.values = values

    def __enter__(self):
        data = m("shared").opts.data
        self.saved = {k: data.get(k, _MISSING) for k in self.values}
        data.update(self.values)

    def __exit__(self, *exc: Any) -> None:
        data = m("shared").opts.data
        for k, v in self.saved.items():
            if v is _MISSING:
                data.pop(k, None)
            else:
                data[k] = v


def _has_file(folder: Path, suffix: str) -> bool:
    if not folder.is_dir():
        return False
    return any(f.endswith(suffix) for _root, _dirs, files in os.walk(folder) for f in files)


def _parse_ranked(text: str) -> list[tuple[str, float]]:
    out = []
    for part in (p.strip() for p in text.split(", ")):
        hit = _RANKED.match(part)
        if hit:
            out.append((hit.group(1), float(hit.group(2))))
        elif part:
            out.append((part, 1.0))
    return out


class DeepbooruTagger:
    """``modules.deepbooru.model``: loaded once per call (``start``), every image tagged, then ``stop``.

    The WebUI's formatting options are overridden for the call so the scores come back raw (underscores,
    no escaping: our caption writer does both) and the threshold is ours; its tag filter still applies.
    """

    name = "deepbooru"

    def available(self) -> tuple[bool, str]:
        folder = models_path() / "torch_deepdanbooru"
        if _has_file(folder, ".pt"):
            return True, ""
        return False, (f"DeepDanbooru's model is not in {folder}: put model-resnet_custom_v3.pt there (from "
                       "github.com/AUTOMATIC1111/TorchDeepDanbooru/releases), or run img2img > Interrogate "
                       "DeepBooru once while online")

    def tag(self, images: Sequence[Any], threshold: float = 0.35) -> list[TagResult]:
        model = m("deepbooru").model
        with _Options(interrogate_deepbooru_score_threshold=float(threshold), deepbooru_use_spaces=False,
                      deepbooru_escape=False, interrogate_return_ranks=True, deepbooru_sort_alpha=False):
            model.start()
            try:
                out = []
                for img in images:
                    tags = _parse_ranked(model.tag_multi(img.convert("RGB")))
                    out.append(TagResult(sorted(tags, key=lambda t: -t[1])))
                return out
            finally:
                model.stop()


class ClipInterrogatorTagger:
    """``shared.interrogator.interrogate``: the BLIP caption (score 1.0) then the CLIP-ranked phrases.

    The interrogator already keeps the top phrases of each category, so ``threshold`` does not apply.
    ``interrogate`` resets ``shared.state`` (progress, Interrupt): both are kept around each call.
    """

    name = "clip"

    def missing(self) -> list[str]:
        gaps = []
        blip = models_path() / "BLIP"
        if not _has_file(blip, ".pth"):
            gaps.append(f"the BLIP model (model_base_caption_capfilt_large.pth) in {blip}")
        repo = getattr(m("paths"), "paths", {}).get("BLIP")
        if not repo or not (Path(repo) / "configs" / "med_config.json").is_file():
            gaps.append("the BLIP repository (repositories/BLIP: start the WebUI once online)")
        clip_root = Path(cmd_opt("clip_models_path") or os.path.expanduser("~/.cache/clip"))
        if not (clip_root / "ViT-L-14.pt").is_file():
            gaps.append(f"the CLIP model ViT-L-14.pt in {clip_root}")
        if not _bert_tokenizer_cached():
            gaps.append("the bert-base-uncased tokenizer in the Hugging Face cache")
        content = Path(getattr(m("shared").interrogator, "content_dir", "interrogate"))
        if not content.is_dir() or not any(content.glob("*.txt")):
            gaps.append(f"the CLIP category lists (*.txt) in {content}")
        return gaps

    def available(self) -> tuple[bool, str]:
        gaps = self.missing()
        if not gaps:
            return True, ""
        return False, "missing " + "; ".join(gaps) + " (run img2img > Interrogate CLIP once while online)"

    def tag(self, images: Sequence[Any], threshold: float = 0.35) -> list[TagResult]:
        interrogator = m("shared").interrogator
        out = []
        with _Options(interrogate_return_ranks=True):
            for img in images:
                with protected_state():
                    text = interrogator.interrogate(img.convert("RGB"))
                if "<error>" in text:
                    raise RuntimeError("the CLIP interrogator failed (its traceback is in the WebUI console)")
                tags = _parse_ranked(text)
                out.append(TagResult(tags[:1] + sorted(tags[1:], key=lambda t: -t[1])))
        return out


def _bert_tokenizer_cached() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache("bert-base-uncased", "vocab.txt"), str)
    except Exception:  # noqa: BLE001 - an old hub: cannot tell, say missing rather than hang
        return False


def register_host_taggers() -> None:
    from ..tagging import wd14
    from ..tagging.registry import register_tagger

    register_tagger("deepbooru", lambda cfg=None: DeepbooruTagger())
    register_tagger("clip", lambda cfg=None: ClipInterrogatorTagger())
    wd14.HOST_MODEL_DIRS[:] = [models_path() / "wd14"]  # the WebUI's models folder, where its users look
    from .. import model_store

    model_store.HOST_MODELS_DIR[:] = [models_path()]  # downloads go to models/wd14/<id>, models/u2net


def unregister_host_taggers() -> None:
    from ..tagging import wd14
    from ..tagging.registry import unregister_tagger

    unregister_tagger("deepbooru")
    unregister_tagger("clip")
    wd14.HOST_MODEL_DIRS.clear()
    from .. import model_store

    model_store.HOST_MODELS_DIR.clear()
