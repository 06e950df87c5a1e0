"""Config dataclass → gradio controls, their tooltips, and back.

Every option the tab shows is generated here from a config field's metadata (``help``, ``min``, ``max``,
``choices``, ``group``), so the tab never drifts from the CLI and the API: a new field appears in the tab
with its tooltip without touching the step modules. Values travel back through ``collect`` as the raw
dict ``config.from_dict`` validates (lists as text: numbers ``0.2, 0.4``, prompts ``a | b``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Optional, Sequence

from ..config import field_meta

# Words a plain ``str.capitalize`` would spell wrong in a label.
_WORDS = {"lr": "LR", "unet": "UNet", "te": "TE", "snr": "SNR", "n": "N", "reso": "resolution", "onnx": "ONNX",
          "wd14": "WD14", "max": "max", "min": "min"}


def field_label(name: str) -> str:
    """``unet_lr`` → ``UNet LR``; ``save_every_n_epochs`` → ``Save every N epochs``."""
    words = [_WORDS.get(w, w) for w in name.split("_")]
    first = words[0]
    words[0] = first if first != first.lower() else first.capitalize()
    return " ".join(words)


def elem_id(prefix: str, name: str) -> str:
    return f"{prefix}-{name.replace('_', '-')}"


def _fields(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls)}


def default_of(cls, name: str) -> Any:
    f = _fields(cls)[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _is_text_list(md: dict) -> bool:
    return md.get("item", "float") != "float"


def field_meta_help(cls, name: str) -> str:
    """The field's one-line help (the CLI's --help text and the tab's tooltip)."""
    return field_meta(cls)[name].get("help", "")


def to_display(cls, name: str, value: Any) -> Any:
    """A config value as its control shows it (lists become one line of text)."""
    md = field_meta(cls)[name]
    if isinstance(value, (list, tuple)):
        return (" | " if _is_text_list(md) else ", ").join(str(v) for v in value)
    return value


def make_control(cls, name: str, t: Callable[[str], str], tips: dict, prefix: str, value: Any = None,
                 **kw: Any):
    """One gradio control for field ``name`` in the current Blocks context; its tooltip goes into ``tips``."""
    import gradio as gr

    md = field_meta(cls)[name]
    typ = _fields(cls)[name].type
    typ = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    value = default_of(cls, name) if value is None else value
    eid = elem_id(prefix, name)
    tips[eid] = t(md.get("help", ""))
    label = kw.pop("label", None) or t(field_label(name))
    common = dict(label=label, elem_id=eid, **kw)
    if md.get("choices"):
        choices = list(md["choices"])
        return gr.Dropdown(choices=choices, value=value if value in choices else choices[0], **common)
    if typ == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if typ in ("int", "float"):
        bounds = {k: md[k] for k in ("min", "max") if k in md}
        return gr.Number(value=value, precision=0 if typ == "int" else None,
                         **({"minimum": bounds["min"]} if "min" in bounds else {}),
                         **({"maximum": bounds["max"]} if "max" in bounds else {}), **common)
    return gr.Textbox(value=to_display(cls, name, value), lines=1, **common)


def make_controls(cls, names: Iterable[str], t: Callable[[str], str], tips: dict, prefix: str,
                  values: Optional[dict] = None, overrides: Optional[dict] = None) -> dict:
    """Controls for ``names`` in order (``overrides``: per-field extra kwargs, e.g. ``choices``)."""
    values = values or {}
    overrides = overrides or {}
    return {n: make_control(cls, n, t, tips, prefix, values.get(n), **overrides.get(n, {})) for n in names}


def groups(cls, skip: Sequence[str] = ()) -> dict[str, list[str]]:
    """Field names by their ``group``, in declaration order."""
    out: dict[str, list[str]] = {}
    for name, md in field_meta(cls).items():
        if name not in skip:
            out.setdefault(md.get("group", "options"), []).append(name)
    return out


def grouped_controls(cls, t: Callable[[str], str], tips: dict, prefix: str, values: Optional[dict] = None,
                     open_groups: Sequence[str] = (), skip: Sequence[str] = (), columns: int = 3,
                     overrides: Optional[dict] = None) -> dict:
    """Every field of ``cls`` (less ``skip``) in one accordion per ``group``, ``columns`` to a row."""
    import gradio as gr

    out: dict = {}
    for group, names in groups(cls, skip).items():
        with gr.Accordion(t(group_title(group)), open=group in open_groups, elem_id=f"{prefix}-group-{group}"):
            for i in range(0, len(names), columns):
                with gr.Row():
                    out.update(make_controls(cls, names[i:i + columns], t, tips, prefix, values, overrides))
    return out


def group_title(group: str) -> str:
    return {"output": "Output and saves", "samples": "Sample images", "network": "Network",
            "training": "Optimizer and schedule", "data": "Data and captions", "crop": "Crop",
            "background": "Background", "import": "Import checks", "tagging": "Tagging"}.get(group, group.title())


def collect(cls, names: Sequence[str], values: Sequence[Any]) -> dict:
    """Control values → a raw dict for ``from_dict`` (empty numbers dropped, so the default applies)."""
    out = {}
    for name, value in zip(names, values):
        if value is None or (isinstance(value, float) and value != value):
            continue
        if isinstance(value, str) and field_meta(cls)[name].get("choices") is None:
            typ = _fields(cls)[name].type
            typ = typ if isinstance(typ, str) else getattr(typ, "__name__", "")
            if typ in ("int", "float") and not value.strip():
                continue
        if isinstance(value, float) and value.is_integer() and _type_name(cls, name) == "int":
            value = int(value)
        out[name] = value
    return out


def _type_name(cls, name: str) -> str:
    typ = _fields(cls)[name].type
    return typ if isinstance(typ, str) else getattr(typ, "__name__", "")


def updates(cls, names: Sequence[str], config: Any) -> list:
    """``gr.update(value=…)`` for each control from a config object (or dict)."""
    import gradio as gr

    get = config.get if isinstance(config, dict) else lambda n, d=None: getattr(config, n, d)
    return [gr.update(value=to_display(cls, n, get(n, default_of(cls, n)))) for n in names]


_ID = re.compile(r"^lt-[a-z0-9-]+$")


def check_ids(ids: Iterable[str]) -> list[str]:
    """The ids that break the tab's naming rule (``lt-`` prefix, lower case, dashes)."""
    return [i for i in ids if i and not _ID.match(i)]
