"""modules/processing.py: ``StableDiffusionProcessingTxt2Img``, ``process_images`` and ``Processed``.

The double samples for real on ``shared.sd_model`` (a few deterministic DDIM steps with classifier-free
guidance, then the VAE decoder), runs extra networks the way the WebUI does (``<lora:name:te[:unet]>`` is
parsed out of the prompt, ``networks.load_networks`` loads it, the layers merge it on use and it stays
loaded afterwards), and updates ``shared.state`` as the WebUI does (job_count if -1, sampling steps,
nextjob). It does NOT take ``queue_lock`` (neither does the WebUI's). Each call is recorded in ``calls``.
"""

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from modules import call_queue, sd_models, shared

calls = []
re_lora = re.compile(r"<(lora|lyco):([^:>]+)((?::[^:>]*)*)>")


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    negative_prompt: str = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    do_not_reload_embeddings: bool = False
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    disable_extra_networks: bool = False
    extra_generation_params: dict = field(default_factory=dict)
    scripts: object = None
    closed: bool = False

    def __post_init__(self):
        self.override_settings = dict(self.override_settings or {})
        self.sd_model = None  # the WebUI's property ignores the setter and returns shared.sd_model

    def close(self):
        self.closed = True


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float = 0.75
    hr_scale: float = 2.0
    hr_upscaler: str = None


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", all_seeds=None, infotexts=None):
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.all_seeds = all_seeds or [seed]
        self.info = info
        self.infotexts = infotexts or [info] * len(images_list)


def _parse_extra_networks(prompt):
    found = []
    for m in re_lora.finditer(prompt):
        args = [a for a in m.group(3).split(":")[1:]]
        te = float(args[0]) if args and args[0] else 1.0
        unet = float(args[1]) if len(args) > 1 and args[1] else te
        found.append((m.group(2), te, unet))
    return re_lora.sub("", prompt).strip(), found


def _foreign_forwards(model):
    """Modules carrying an instance-level ``forward`` (someone else's adapter wrapped around them)."""
    return sum(1 for m in model.modules() if "forward" in m.__dict__)


def _downscale(model):
    return 2 ** (model.first_stage_model.encoder.num_resolutions - 1)


@torch.no_grad()
def _sample(model, cond, uncond, seed, steps, cfg_scale, width, height):
    f = _downscale(model)
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn((1, 4, height // f, width // f), generator=g)
    ac = model.alphas_cumprod.float().cpu()
    ts = torch.linspace(len(ac) - 1, 0, steps).round().long()
    for i, t in enumerate(ts):
        shared.state.sampling_step = i
        a = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        both = model.apply_model(torch.cat([x, x]), torch.tensor([int(t)] * 2), torch.cat([uncond, cond]))
        e_u, e_c = both.chunk(2)
        eps = e_u + cfg_scale * (e_c - e_u)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    img = model.decode_first_stage(x)[0]
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


def process_images(p):
    import networks  # the builtin Lora extension (top-level module in the WebUI)

    model = shared.sd_model
    sd_models.reload_model_weights()
    prompt, extra = _parse_extra_networks(p.prompt)
    if not p.disable_extra_networks:
        networks.load_networks([n for n, _, _ in extra], [t for _, t, _ in extra], [u for _, _, u in extra])
    calls.append({"prompt": p.prompt, "negative_prompt": p.negative_prompt, "seed": p.seed, "steps": p.steps,
                  "sampler_name": p.sampler_name, "scheduler": p.scheduler, "cfg_scale": p.cfg_scale,
                  "size": (p.width, p.height),
                  "foreign_forwards": _foreign_forwards(model),
                  "loaded_networks": [n.name for n in networks.loaded_networks],
                  "queue_lock_held": call_queue.queue_lock._lock.locked()})
    if shared.state.job_count == -1:
        shared.state.job_count = p.n_iter
    shared.state.sampling_steps = p.steps
    with torch.no_grad():
        networks.apply_to_model(model)  # the patched layer forwards merge the loaded networks on use
        cond = model.get_learned_conditioning([prompt])
        uncond = model.get_learned_conditioning([p.negative_prompt])
    images, infotexts, seeds = [], [], []
    seed = p.seed if p.seed >= 0 else 1234
    for n in range(p.n_iter):
        if shared.state.interrupted or shared.state.stopping_generation:
            break
        s = seed + n
        images.append(_sample(model, cond, uncond, s, p.steps, p.cfg_scale, p.width, p.height))
        info = (f"{prompt}\nNegative prompt: {p.negative_prompt}\nSteps: {p.steps}, Sampler: {p.sampler_name}, "
                f"CFG scale: {p.cfg_scale}, Seed: {s}, Size: {p.width}x{p.height}")
        if networks.loaded_networks:
            hashes = ", ".join(f"{n.name}: {n.network_on_disk.shorthash}" for n in networks.loaded_networks)
            info += f', Lora hashes: "{hashes}"'
        infotexts.append(info)
        seeds.append(s)
        shared.state.nextjob()
    return Processed(p, images, seed=seed, info=infotexts[0] if infotexts else "", all_seeds=seeds,
                     infotexts=infotexts)
