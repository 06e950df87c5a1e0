"""The WebUI as the adapter sees it: its modules (reached late, by name), what kind of host it is, its
folders, and our settings.

Every WebUI module is looked up when it is needed (``m("shared")``), never bound at import: the adapter
imports nothing of the WebUI's at load time, and a WebUI "Reload UI" or the test double can swap modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

SECTION = ("lora_trainer", "LoRA Trainer")  # a 2-tuple: 1.6 has no settings categories
TAGGER_CHOICES = ("deepbooru", "clip", "wd14", "wd-vit-tagger-v3", "wd-swinv2-tagger-v3", "wd-eva02-large-tagger-v3",
                  "toy", "none")

# key -> (default, label, choices or None). Every key is prefixed ``lora_trainer_`` (the settings namespace is
# shared with the WebUI and every other extension).
SETTINGS: dict[str, tuple[Any, str, Optional[tuple]]] = {
    "lora_trainer_workspace": ("", "Workspace folder for LoRA Trainer projects (empty: <WebUI data folder>/"
                                   "lora_trainer; takes effect after a restart)", None),
    "lora_trainer_default_tagger": ("deepbooru", "Default tagger of the Auto-tag step", TAGGER_CHOICES),
    "lora_trainer_rembg_model": ("u2net", "Default background-removal model (rembg)",
                                 ("none", "u2net", "u2netp", "u2net_human_seg", "silueta", "isnet-general-use",
                                  "isnet-anime", "birefnet-portrait", "birefnet-general")),
    "lora_trainer_publish": (True, "Copy each finished LoRA into the Lora folder (under a unique name, with its "
                                   ".json sidecar)", None),
    "lora_trainer_test_sampler": ("Euler a", "Sampler of the Test step's txt2img", None),
    "lora_trainer_api_roots": ("", "Folders the HTTP API may import images from, besides the workspace "
                                   f"(separated by {os.pathsep!r}; takes effect after a restart)", None),
}
RESTART_KEYS = ("lora_trainer_workspace", "lora_trainer_api_roots")
API_ROOTS_HINT = ("add its folder to Settings > LoRA Trainer > 'Folders the HTTP API may import images from' "
                  "and restart the WebUI, or upload the files instead")


def m(name: str) -> ModuleType:
    """``modules.<name>`` of the running WebUI."""
    return importlib.import_module(f"modules.{name}")


def lora_networks() -> Optional[ModuleType]:
    """The builtin Lora extension's ``networks`` module, or None (extension disabled, or not A1111's).

    The WebUI imports it as the top-level module ``networks`` while loading the builtin extension (before
    user extensions); we only look it up, never import it (another ``networks`` could be on sys.path).
    """
    mod = sys.modules.get("networks")
    return mod if mod is not None and hasattr(mod, "loaded_networks") else None


def host_kind() -> str:
    """``a1111``, ``forge1`` (gradio 3, ldm model: trains in place) or ``forge2`` (gradio 4, its own engine)."""
    if "modules_forge" not in sys.modules and importlib.util.find_spec("modules_forge") is None:
        return "a1111"
    from ..compat import gradio_major

    if "backend.diffusion_engine" in sys.modules or gradio_major() >= 4:
        return "forge2"
    return "forge1"


def webui_version() -> str:
    try:
        return str(m("launch_utils").git_tag())
    except Exception:  # noqa: BLE001 - a git problem must not break the tab
        return "unknown"


def setting(key: str) -> Any:
    """Our option's value; read through ``opts.data`` because options registered in ``on_ui_settings`` only
    exist after the UI is built (WEBUI_API.md §2.3)."""
    try:
        value = m("shared").opts.data.get(key)
    except Exception:  # noqa: BLE001
        value = None
    return SETTINGS[key][0] if value is None else value


def cmd_opt(name: str, default: Any = None) -> Any:
    return getattr(m("shared").cmd_opts, name, default)


def models_path() -> Path:
    return Path(m("paths").models_path)


def lora_dir() -> Path:
    """``--lora-dir`` when the builtin Lora's preload defined it, else ``<models>/Lora``."""
    return Path(cmd_opt("lora_dir") or (models_path() / "Lora"))


def workspace_dir() -> Path:
    configured = str(setting("lora_trainer_workspace") or "").strip()
    if configured:
        return Path(os.path.expanduser(configured))
    return Path(m("paths_internal").data_path) / "lora_trainer"


def extra_api_roots() -> list[Path]:
    """The folders of ``lora_trainer_api_roots`` (``os.pathsep``-separated, ``~`` expanded), in order."""
    text = str(setting("lora_trainer_api_roots") or "")
    return [Path(os.path.expanduser(part.strip())) for part in text.split(os.pathsep) if part.strip()]


def loaded_model() -> Any:
    """The loaded checkpoint WITHOUT loading one (``shared.sd_model`` would start a load)."""
    try:
        return m("sd_models").model_data.sd_model
    except Exception:  # noqa: BLE001
        return None


def register_settings() -> None:
    """``on_ui_settings``: our section and keys. Dropdowns get gradio only here (the UI is being built)."""
    shared = m("shared")
    for key, (default, label, choices) in SETTINGS.items():
        if choices:
            import gradio as gr

            info = shared.OptionInfo(default, label, gr.Dropdown, {"choices": list(choices)}, section=SECTION)
        else:
            info = shared.OptionInfo(default, label, section=SECTION)
        if key in RESTART_KEYS and hasattr(info, "needs_restart"):
            info = info.needs_restart()
        shared.opts.add_option(key, info)


def api_auth() -> Optional[list[tuple[str, str]]]:
    """``--api-auth "u:p,u2:p2"`` as ``[("u", "p"), ("u2", "p2")]``; None when not given."""
    text = cmd_opt("api_auth") or ""
    pairs = [item.split(":", 1) for item in text.split(",") if ":" in item]
    return [(u.strip(), p) for u, p in pairs] or None


def api_enabled() -> bool:
    """Our routes are mounted only when the user asked for an API (``--api`` or ``--nowebui``)."""
    return bool(cmd_opt("api", False) or cmd_opt("nowebui", False))
