"""A small, exact test double of the AUTOMATIC1111 WebUI modules our host adapter uses.

``modules/`` mirrors only the attributes ``lora_trainer/host/`` touches, each with a comment naming the WebUI
file (v1.10.1 unless said otherwise) it stands for; ``lora_ext/networks.py`` stands for the builtin Lora
extension's ``networks`` module (``extensions-builtin/Lora/networks.py``), which the WebUI imports as the
top-level module ``networks``. Written from reading the WebUI's source, not copied from it.

``shared.sd_model`` is a real ldm ``LatentDiffusion`` (``tests/ldm_models.py: tiny_latent_diffusion``), so the
adapter trains the very classes the WebUI runs. The double is put into ``sys.modules`` only inside the
``webui_double`` fixture (``fixture.py``) and removed afterwards.
"""
