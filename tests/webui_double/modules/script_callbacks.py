"""modules/script_callbacks.py with the 1.6-1.8 signatures: ``on_xxx(callback)`` takes NO ``name=`` keyword
(1.9 added it), so an extension that passes one fails here as it would on 1.6-1.8."""

callback_map = {k: [] for k in (
    "callbacks_app_started", "callbacks_model_loaded", "callbacks_ui_tabs", "callbacks_ui_train_tabs",
    "callbacks_ui_settings", "callbacks_before_image_saved", "callbacks_image_saved", "callbacks_cfg_denoiser",
    "callbacks_before_component", "callbacks_after_component", "callbacks_image_grid",
    "callbacks_infotext_pasted", "callbacks_script_unloaded", "callbacks_before_ui", "callbacks_on_reload",
    "callbacks_list_optimizers", "callbacks_list_unets",
)}


def _add(category, callback):
    callback_map[category].append(callback)


def on_app_started(callback):
    _add("callbacks_app_started", callback)


def on_model_loaded(callback):
    _add("callbacks_model_loaded", callback)


def on_ui_tabs(callback):
    _add("callbacks_ui_tabs", callback)


def on_ui_train_tabs(callback):
    _add("callbacks_ui_train_tabs", callback)


def on_ui_settings(callback):
    _add("callbacks_ui_settings", callback)


def on_script_unloaded(callback):
    _add("callbacks_script_unloaded", callback)


def on_before_ui(callback):
    _add("callbacks_before_ui", callback)


def on_before_reload(callback):
    _add("callbacks_on_reload", callback)


def on_image_saved(callback):
    _add("callbacks_image_saved", callback)


def on_cfg_denoiser(callback):
    _add("callbacks_cfg_denoiser", callback)


def on_infotext_pasted(callback):
    _add("callbacks_infotext_pasted", callback)


def registered():
    """Test helper: ``{category: count}`` of everything registered so far."""
    return {k[len("callbacks_"):]: len(v) for k, v in callback_map.items() if v}


def ui_tabs_callback():
    """As in 1.10.1: every ``on_ui_tabs`` callback's list of (Blocks, title, elem_id), joined."""
    res = []
    for callback in callback_map["callbacks_ui_tabs"]:
        res += callback() or []
    return res
