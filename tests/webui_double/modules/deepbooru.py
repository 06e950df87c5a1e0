"""modules/deepbooru.py: ``model = DeepDanbooru()`` with ``start``/``stop``/``tag``/``tag_multi``.

The WebUI's ``load()`` finds ``models/torch_deepdanbooru/*.pt`` or downloads it from GitHub (which hangs or
fails offline); the double raises where the download would start. ``tag_multi`` formats tags exactly as
the WebUI's does from the options (threshold, spaces, escaping, ranks, sort, filter); its "network" scores
a few tags from the image's colours so results depend on the image.
"""

import os
import re

import numpy as np
from modules import paths, shared

re_special = re.compile(r"([\\()])")


class DeepDanbooru:
    def __init__(self):
        self.model = None
        self.on_device = False

    def load(self):
        if self.model is not None:
            return
        folder = os.path.join(paths.models_path, "torch_deepdanbooru")
        files = [f for f in (os.listdir(folder) if os.path.isdir(folder) else []) if f.endswith(".pt")]
        if not files:
            raise RuntimeError("double: would download model-resnet_custom_v3.pt from github.com (offline: hangs)")
        self.model = "loaded"

    def start(self):
        self.load()
        self.on_device = True

    def stop(self):
        if not shared.opts.interrogate_keep_models_in_memory:
            self.on_device = False

    def tag(self, pil_image):
        self.start()
        res = self.tag_multi(pil_image)
        self.stop()
        return res

    @staticmethod
    def _scores(pil_image):
        a = np.asarray(pil_image.convert("RGB").resize((64, 64)), dtype=np.float32) / 255
        r, g, b = a[..., 0].mean(), a[..., 1].mean(), a[..., 2].mean()
        return {"red_theme": float(r), "green_theme": float(g), "blue_theme": float(b),
                "simple_background": 0.9, "solo_(focus)": 0.7, ":d": 0.6, "rating:safe": 0.99,
                "monochrome": float(1 - (abs(r - g) + abs(g - b)))}

    def tag_multi(self, pil_image, force_disable_ranks=False):
        assert self.on_device, "tag_multi before start()"
        o = shared.opts
        include_ranks = o.interrogate_return_ranks and not force_disable_ranks
        probs = {t: p for t, p in self._scores(pil_image).items()
                 if p >= o.interrogate_deepbooru_score_threshold and not t.startswith("rating:")}
        tags = sorted(probs) if o.deepbooru_sort_alpha else [t for t, _ in sorted(probs.items(), key=lambda x: -x[1])]
        filtered = {x.strip().replace(" ", "_") for x in o.deepbooru_filter_tags.split(",")}
        res = []
        for tag in [t for t in tags if t not in filtered]:
            out = tag
            if o.deepbooru_use_spaces:
                out = out.replace("_", " ")
            if o.deepbooru_escape:
                out = re.sub(re_special, r"\\\1", out)
            if include_ranks:
                out = f"({out}:{probs[tag]:.3f})"
            res.append(out)
        return ", ".join(res)


model = DeepDanbooru()
