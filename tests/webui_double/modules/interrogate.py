"""modules/interrogate.py: ``InterrogateModels`` (``shared.interrogator``): BLIP caption + CLIP-ranked flavours.

As in the WebUI, ``interrogate()`` calls ``shared.state.begin()``/``end()`` (resetting progress and the
Interrupt flag) and, when a model cannot be loaded, returns the text so far plus ``"<error>"`` instead of
raising. The double's "models" exist when the files the WebUI would load exist (else it "fails" as the
WebUI does offline).
"""

import os

from modules import paths, shared

blip_image_eval_size = 384
clip_model_name = "ViT-L/14"


class InterrogateModels:
    def __init__(self, content_dir):
        self.content_dir = content_dir
        self.loaded = False
        self.calls = 0

    def _files_present(self):
        blip = os.path.join(paths.models_path, "BLIP")
        clip_root = shared.cmd_opts.clip_models_path or os.path.expanduser("~/.cache/clip")
        return (os.path.isdir(blip) and any(f.endswith(".pth") for f in os.listdir(blip))
                and os.path.isfile(os.path.join(clip_root, "ViT-L-14.pt")))

    def load(self):
        if not self._files_present():
            raise RuntimeError("double: would download BLIP/CLIP weights")
        self.loaded = True

    def unload(self):
        self.loaded = False

    def categories(self):
        out = []
        for f in sorted(os.listdir(self.content_dir)) if os.path.isdir(self.content_dir) else []:
            if f.endswith(".txt"):
                with open(os.path.join(self.content_dir, f), encoding="utf8") as fh:
                    out.append((f[:-4], [x.strip() for x in fh if x.strip()]))
        return out

    def interrogate(self, pil_image):
        self.calls += 1
        res = ""
        shared.state.begin(job="interrogate")
        try:
            self.load()
            w, h = pil_image.size
            res = "a picture of a square" if w == h else "a picture of a rectangle"
            for i, (_name, items) in enumerate(self.categories()):
                match, score = items[(w + i) % len(items)], 0.2 + 0.1 * i
                res += f", ({match}:{score:.3f})" if shared.opts.interrogate_return_ranks else f", {match}"
        except Exception:
            res += "<error>"
        self.unload()
        shared.state.end()
        return res
