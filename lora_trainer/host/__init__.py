"""The WebUI host adapter: the only code that imports the WebUI's ``modules.*`` (and its builtin ``networks``).

Kept import-free: ``scripts/lora_trainer_ext.py`` imports ``lora_trainer`` at WebUI start-up, and the
adapter itself (``host.webui``) loads on first use, from a callback.
"""
