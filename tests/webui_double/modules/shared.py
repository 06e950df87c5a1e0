"""modules/shared.py (+ shared_init.py, shared_cmd_options.py, shared_options.py): the globals the adapter reads.

In the WebUI ``shared.sd_model`` is a property over ``sd_models.model_data``; here the fixture sets both.
"""

import argparse

from modules import options, shared_state
from modules.options import OptionInfo, options_section  # noqa: F401 - shared.OptionInfo in 1.6-1.10

# modules/cmd_args.py flags the adapter reads (a CPU run: --no-half); ``lora_dir`` comes from the builtin Lora's
# preload.py, ``lyco_dir_backcompat`` too.
cmd_opts = argparse.Namespace(
    lowvram=False, medvram=False, no_half=True, api=False, nowebui=False, api_auth=None, lora_dir=None,
    lyco_dir_backcompat=None, clip_models_path=None,
)

# modules/shared_options.py defaults for the options the adapter (or the double) reads.
opts = options.Options({
    "interrogate_deepbooru_score_threshold": OptionInfo(0.5, "deepbooru: score threshold"),
    "deepbooru_sort_alpha": OptionInfo(True, "deepbooru: sort tags alphabetically"),
    "deepbooru_use_spaces": OptionInfo(True, "deepbooru: use spaces in tags"),
    "deepbooru_escape": OptionInfo(True, "deepbooru: escape (\\) brackets"),
    "deepbooru_filter_tags": OptionInfo("", "deepbooru: filter out those tags"),
    "interrogate_return_ranks": OptionInfo(False, "Include ranks of model tags matches in results."),
    "interrogate_keep_models_in_memory": OptionInfo(False, "Keep models in VRAM"),
    "lora_functional": OptionInfo(False, "Lora/Networks: use old method"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip"),
})

state = shared_state.State()
sd_model = None                # set by the fixture (and by sd_models.model_data)
interrogator = None            # interrogate.InterrogateModels("interrogate"), set by the fixture
loaded_hypernetworks = []      # modules/shared.py: hypernetworks the attention applies
parallel_processing_allowed = True
