"""The page as WebUI 1.10.1 builds it around an extension's tab (``modules/ui.py: create_ui`` and
``modules/ui_loadsave.py``), for the browser test (``tests/e2e_tab.py --webui``).

What matters for an extension tab, and is reproduced here: the Blocks each ``on_ui_tabs`` callback returns
is rendered into the WebUI's own Blocks inside ``gr.Tabs(elem_id="tabs")`` / ``gr.TabItem(title, id=ifid,
elem_id="tab_" + ifid)``; then ``UiLoadsave.add_block(interface, ifid)`` walks it: every labelled Textbox,
Number, Checkbox, Dropdown, Radio and Slider has its value written to ``ui-config.json`` as
``"<ifid>/<label>/value"`` on the first start, and on every later start the saved value is put back over
the one the tab was built with (a Dropdown's or Radio's only when it is among the choices), unless the
component has ``do_not_save_to_config``. The queue is on (``demo.queue(64)`` in ``webui.py``).
"""

from __future__ import annotations

import json
from pathlib import Path


def _choices(comp) -> list:
    return [c[0] if isinstance(c, tuple) else c for c in getattr(comp, "choices", None) or []]


class UiLoadsave:
    """``modules/ui_loadsave.py``'s ``add_component``/``add_block``/``dump_defaults`` (the value fields)."""

    def __init__(self, filename: Path):
        self.filename = Path(filename)
        self.ui_settings = json.loads(self.filename.read_text(encoding="utf-8")) if self.filename.is_file() else {}

    def add_component(self, path: str, x) -> None:
        import gradio as gr

        def apply_field(obj, field, condition=None):
            key = f"{path}/{field}"
            if getattr(obj, "do_not_save_to_config", False):
                return
            saved = self.ui_settings.get(key, None)
            if saved is None:
                self.ui_settings[key] = getattr(obj, field)
            elif condition and not condition(saved):
                pass
            else:
                if isinstance(obj, gr.Textbox) and field == "value":
                    saved = str(saved)
                elif isinstance(obj, gr.Number) and field == "value":
                    try:
                        saved = float(saved)
                    except ValueError:
                        return
                setattr(obj, field, saved)

        if type(x) in (gr.Slider, gr.Radio, gr.Checkbox, gr.Textbox, gr.Number, gr.Dropdown, gr.Button) and x.visible:
            apply_field(x, "visible")
        if type(x) in (gr.Slider, gr.Checkbox, gr.Textbox, gr.Number):
            apply_field(x, "value")
        if type(x) == gr.Radio:
            apply_field(x, "value", lambda v: v in _choices(x))
        if type(x) == gr.Dropdown:
            apply_field(x, "value", lambda v: all(i in _choices(x) for i in v) if getattr(x, "multiselect", False)
                        else v in _choices(x))

    def add_block(self, x, path: str = "") -> None:
        import gradio as gr

        if hasattr(x, "children"):
            for c in x.children:
                self.add_block(c, path)
        elif getattr(x, "label", None) is not None:
            self.add_component(f"{path}/{x.label}", x)
        elif isinstance(x, gr.Button) and x.value is not None:
            self.add_component(f"{path}/{x.value}", x)

    def dump_defaults(self) -> None:
        self.filename.write_text(json.dumps(self.ui_settings, indent=4, ensure_ascii=False), encoding="utf-8")


def create_ui(ui_config: Path, css: str = "", head_js: str = ""):
    """The WebUI's page: every registered ``on_ui_tabs`` tab in its TabItem, values through ``UiLoadsave``.
    ``head_js``: a load hook standing in for the WebUI's injection of extensions' ``javascript/*.js``."""
    import gradio as gr

    from lora_trainer.compat import js_kw
    from modules import script_callbacks

    interfaces = script_callbacks.ui_tabs_callback()
    loadsave = UiLoadsave(ui_config)
    with gr.Blocks(analytics_enabled=False, title="Stable Diffusion", css=css) as demo:
        with gr.Tabs(elem_id="tabs"):
            with gr.TabItem("txt2img", id="txt2img", elem_id="tab_txt2img"):
                gr.Textbox(label="Prompt", elem_id="txt2img_prompt")
            for interface, label, ifid in interfaces:
                with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                    interface.render()
                loadsave.add_block(interface, ifid)
        if head_js:
            demo.load(None, None, None, **js_kw(head_js))
    loadsave.dump_defaults()
    return demo
