"""modules/sd_samplers.py: ``visible_samplers()``, the samplers txt2img lists (``all_samplers`` less the names in
``shared.opts.hide_samplers``), each a ``SamplerData`` (``modules/sd_samplers_common.py``) of which the adapter
reads ``.name``. The names are a subset of WebUI 1.10's k-diffusion and timestep samplers."""

from collections import namedtuple

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])

all_samplers = [SamplerData(n, None, a, {}) for n, a in (
    ("DPM++ 2M", ["k_dpmpp_2m"]), ("Euler a", ["k_euler_a", "k_euler_ancestral"]), ("Euler", ["k_euler"]),
    ("DDIM", ["ddim"]), ("UniPC", ["unipc"]))]
samplers_hidden = set()


def visible_samplers():
    return [x for x in all_samplers if x.name not in samplers_hidden]
