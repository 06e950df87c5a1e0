# modules/textual_inversion/__init__.py (empty in the WebUI).
