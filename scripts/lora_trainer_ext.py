"""LoRA Trainer's WebUI entry: registers the extension's callbacks, and nothing else.

The WebUI runs this file with the extension folder on ``sys.path`` only while it runs (WEBUI_API.md §1.2),
so the ``lora_trainer`` package is imported now; it is light (no torch, no gradio). Everything else is
imported inside the callbacks, when the WebUI calls them. Callbacks are registered without ``name=``
(1.6-1.8 do not accept it).
"""

import logging

import lora_trainer  # noqa: F401 - now or never: the extension folder leaves sys.path after this file
from modules import script_callbacks

log = logging.getLogger("lora_trainer")

TAB_TITLE = "LoRA Trainer"
TAB_ID = "lora_trainer"


def on_ui_tabs():
    from lora_trainer.host import webui

    try:
        from lora_trainer.ui.tab import build_tab

        blocks = build_tab(webui.get_service(), webui.host_info())
    except Exception as exc:  # noqa: BLE001 - show the problem in the tab instead of losing the tab
        log.exception("LoRA Trainer: building the tab failed")
        import gradio as gr

        with gr.Blocks(analytics_enabled=False) as blocks:
            gr.Markdown(f"**LoRA Trainer could not build its tab** ({type(exc).__name__}: {exc}). "
                        "The WebUI console has the details.")
    return [(blocks, TAB_TITLE, TAB_ID)]


def on_ui_settings():
    from lora_trainer.host import env

    env.register_settings()


def on_app_started(demo, app):
    from lora_trainer.host import env

    if not env.api_enabled():
        return
    try:
        from lora_trainer.api import mount_routes
    except ImportError:
        log.warning("LoRA Trainer: the HTTP API is not available in this version", exc_info=True)
        return
    from lora_trainer.host import webui

    service = webui.get_service()
    mount_routes(app, service, enabled=True, auth=env.api_auth(),
                 roots=[service.workspace, *env.extra_api_roots()], roots_hint=env.API_ROOTS_HINT)


def on_script_unloaded():
    from lora_trainer.host import webui

    webui.on_script_unloaded()


def on_model_loaded(sd_model):
    from lora_trainer.host import webui

    webui.on_model_loaded(sd_model)


script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_script_unloaded(on_script_unloaded)
script_callbacks.on_model_loaded(on_model_loaded)
