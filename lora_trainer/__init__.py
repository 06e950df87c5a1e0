"""LoRA Trainer: a folder of photos to a working LoRA, in the WebUI or standalone.

Kept light on purpose: the WebUI imports this package at start-up (scripts/lora_trainer_ext.py), so
nothing heavy (torch, diffusers, gradio) is imported here; submodules load it when a job needs it.
"""

__version__ = "0.1.0"
