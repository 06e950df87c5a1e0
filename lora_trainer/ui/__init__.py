"""The gradio tab: seven steps over ``Service`` (``tab.build_tab``), one module per step.

Kept light on purpose: the WebUI imports ``lora_trainer`` at start-up and this package may be imported with
it; gradio and the step modules load only when ``build_tab`` runs.
"""
