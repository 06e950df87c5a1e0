"""Tagger names → factories: ``none``, ``toy``, ``wd14`` here; the WebUI adapter adds ``deepbooru`` and
``clip`` with ``register_tagger`` when it loads (only it may import the WebUI's modules).

A factory takes the ``TagConfig`` and returns a Tagger without loading any model; ``get_tagger`` then asks
the tagger whether it is ``available()`` and turns a "no" into a UserError at once — a tagger without its
model fails fast with a message instead of hanging on a download.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..errors import UserError
from .base import Tagger

TaggerFactory = Callable[..., Tagger]
_FACTORIES: dict[str, TaggerFactory] = {}


def register_tagger(name: str, factory: TaggerFactory) -> None:
    """Add (or replace) a tagger. ``factory(cfg: TagConfig) -> Tagger``; it must not load models yet."""
    if not name or name == "none":
        raise ValueError("a tagger needs a name other than 'none'")
    _FACTORIES[name] = factory


def unregister_tagger(name: str) -> None:
    """Remove a tagger (the host adapter does this when the extension is unloaded)."""
    _FACTORIES.pop(name, None)


def tagger_names() -> list[str]:
    """``none`` first, then every registered tagger."""
    return ["none", *_FACTORIES]


def _toy(cfg=None) -> Tagger:
    from ..toy.tagger import ToyTagger

    return ToyTagger()


def _wd14_factory(model_id: str = "") -> TaggerFactory:
    def make(cfg=None) -> Tagger:
        from .wd14 import WD14Tagger

        return WD14Tagger("" if model_id else (getattr(cfg, "model_dir", "") or ""),
                          character_threshold=getattr(cfg, "character_threshold", 0.85), model_id=model_id,
                          character_tags=getattr(cfg, "character_tags", True),
                          rating_tag=getattr(cfg, "rating_tag", False))
    return make


register_tagger("toy", _toy)
register_tagger("wd14", _wd14_factory())  # the folder in TagConfig.model_dir, else the default v3 model's
for _id in ("wd-vit-tagger-v3", "wd-swinv2-tagger-v3", "wd-eva02-large-tagger-v3"):  # the store's folders
    register_tagger(_id, _wd14_factory(_id))


def make_tagger(name: str, cfg=None) -> Optional[Tagger]:
    """The tagger named ``name`` (None for ``none``), not yet checked for availability."""
    if name == "none":
        return None
    factory = _FACTORIES.get(name)
    if factory is None:
        import difflib

        close = difflib.get_close_matches(name, list(_FACTORIES), n=1)
        raise UserError(f"unknown tagger {name!r} (known: {', '.join(tagger_names())})",
                        f"did you mean {close[0]!r}?" if close else
                        "deepbooru and clip exist only inside the WebUI")
    return factory(cfg)


def get_tagger(name: str, cfg=None) -> Optional[Tagger]:
    """The tagger, ready to use, or a UserError saying what is missing and where to put it."""
    tagger = make_tagger(name, cfg)
    if tagger is None:
        return None
    ok, why = tagger.available()
    if not ok:
        raise UserError(f"tagger {name!r} is not available: {why}", "install what it needs, or choose another "
                                                                   "tagger (toy needs nothing)")
    return tagger


def describe_taggers(cfg=None) -> list[dict]:
    """``[{name, available, reason}]`` for the tab's dropdown; never loads a model."""
    out = [{"name": "none", "available": True, "reason": ""}]
    for name in _FACTORIES:
        try:
            ok, why = make_tagger(name, cfg).available()
        except Exception as exc:  # noqa: BLE001 - a broken host tagger must not break the list
            ok, why = False, f"{type(exc).__name__}: {exc}"
        out.append({"name": name, "available": ok, "reason": why})
    return out
