"""Test generation: the ``Generator`` protocol, and diffusers txt2img with a LoRA applied (standalone).

In the WebUI the host adapter provides a Generator over the WebUI's own txt2img instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Protocol, Sequence

import torch

LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([0-9.+-]+))?[^>]*>")

# Standalone samplers, named as the WebUI names them (the Test step offers the same names in both), each
# a diffusers scheduler with SD's training schedule. The first is the default: the one the toy model's
# figures were measured with.
SAMPLERS = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}
DEFAULT_SAMPLER = next(iter(SAMPLERS))


def diffusers_scheduler(name: str, prediction_type: str = "epsilon"):
    """The diffusers scheduler for a sampler name of :data:`SAMPLERS`; a UserError names the choices."""
    import diffusers

    if name not in SAMPLERS:
        from .errors import UserError

        raise UserError(f"unknown sampler {name!r}", "choose one of: " + ", ".join(SAMPLERS))
    cls, extra = SAMPLERS[name]
    return getattr(diffusers, cls)(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", prediction_type=prediction_type,
                                   timestep_spacing="leading", steps_offset=1, **extra)


class Generator(Protocol):
    def generate(self, prompts: Sequence[str], *, negative: str = "", seeds: Sequence[int] = (0,),
                 steps: int = 20, cfg_scale: float = 7.0, size: int = 512, lora: Optional[str] = None,
                 weight: float = 1.0, sampler: Optional[str] = None) -> list:
        """One PIL image per (prompt, seed) pair; ``sampler`` by name (None: the generator's default)."""
        ...


def strip_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """``"a <lora:x:0.8> cat"`` -> ("a cat", [("x", 0.8)])."""
    found = [(m.group(1), float(m.group(2) or 1.0)) for m in LORA_TAG.finditer(prompt)]
    return " ".join(LORA_TAG.sub("", prompt).split()), found


class DiffusersGenerator:
    """txt2img on a DiffusersBackend's parts; a LoRA file is attached through our own network code, with
    the same kohya names the trainer writes, and detached afterwards."""

    def __init__(self, backend, sampler: str = DEFAULT_SAMPLER):
        self.backend = backend
        self.sampler_name = sampler
        self._pipe = None

    def pipeline(self, sampler: Optional[str] = None):
        """The pipeline over the backend's modules, with ``sampler``'s scheduler (None: the default)."""
        sched = diffusers_scheduler(sampler or self.sampler_name, self.backend.prediction_type)
        if self._pipe is None:
            from diffusers import StableDiffusionPipeline

            be = self.backend
            self._pipe = StableDiffusionPipeline(vae=be.vae, text_encoder=be.text_encoder, tokenizer=be.tokenizer,
                                                 unet=be.unet, scheduler=sched, safety_checker=None,
                                                 feature_extractor=None, requires_safety_checker=False)
            self._pipe.set_progress_bar_config(disable=True)
        else:
            self._pipe.scheduler = sched
        return self._pipe

    def network_for(self, lora_path: str | Path, weight: float):
        from .errors import UserError
        from .model_files import check_lora
        from .training.network import LoRANetwork
        from .training.saving import read_lora

        check_lora(lora_path, "LoRA")  # a missing, truncated or non-LoRA file: one line naming it, not a traceback
        tensors, _ = read_lora(lora_path)
        prefixes = {k.split(".", 1)[0] for k in tensors}
        other = sorted(p for p in prefixes if f"{p}.lora_down.weight" not in tensors)
        if other:
            raise UserError(f"LoRA {lora_path}: {other[0]} is not a LoRA/LoCon module (LoHa, LoKr, …?)",
                            "LoRA Trainer's test step draws with LoRA and LoCon files; use the WebUI for the others")
        be = self.backend
        targets = {**be.lora_targets("unet", conv=True), **be.lora_targets("te")}
        missing = prefixes - set(targets)
        if missing:
            raise UserError(f"{Path(lora_path).name}: {len(missing)} LoRA modules do not exist in this model "
                            f"(e.g. {sorted(missing)[0]})", "use the base model the LoRA was trained on")
        ranks = {p: tensors[f"{p}.lora_down.weight"].shape[0] for p in prefixes}
        net = LoRANetwork({p: targets[p] for p in prefixes}, rank=max(ranks.values()), alpha=1.0,
                          conv_rank=max(ranks.values()))
        # Build each module at the file's own rank, then load.
        for p in prefixes:
            from .training.network import LoRAModule

            net.loras[p] = LoRAModule(p, targets[p], ranks[p], 1.0)
        net.load_kohya({k: v for k, v in tensors.items()})
        net.to(be.device)
        net.set_multiplier(weight)
        return net

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], *, negative: str = "", seeds: Sequence[int] = (0,), steps: int = 20,
                 cfg_scale: float = 7.0, size: int = 512, lora: Optional[str] = None, weight: float = 1.0,
                 sampler: Optional[str] = None) -> list:
        pipe = self.pipeline(sampler)
        net = self.network_for(lora, weight) if lora else None
        images = []
        try:
            if net is not None:
                net.attach()
            for prompt in prompts:
                text, _tags = strip_lora_tags(prompt)
                for seed in seeds:
                    g = torch.Generator(device="cpu").manual_seed(int(seed))
                    out = pipe(text, negative_prompt=negative or None, num_inference_steps=steps,
                               guidance_scale=cfg_scale, height=size, width=size, generator=g)
                    images.append(out.images[0])
        finally:
            if net is not None:
                net.detach()
        return images
