"""Sample images during training, through whichever ``Generator`` the front end gives.

``Callbacks.on_sample(step, epoch)`` is called by the loop with the training network attached to the
model, so the generator is called WITHOUT a ``lora`` file: what it draws already includes the LoRA as it
is at that step (standalone the diffusers pipeline over the backend's own modules; in the WebUI the
host's txt2img over the same loaded model). Images are written atomically as
``<job_dir>/samples/step000100-0.png`` (step, then the index over prompts × seeds, prompt-major).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

log = logging.getLogger("lora_trainer")


class Sampler:
    """A callable for ``Callbacks.on_sample``; ``written`` lists every file it wrote."""

    def __init__(self, generator, job_dir, prompts: Sequence[str], *, seeds: Sequence[int] = (0,), steps: int = 20,
                 size: int = 512, cfg_scale: float = 7.0, negative: str = ""):
        self.generator = generator
        self.folder = Path(job_dir) / "samples"
        self.prompts = [p for p in prompts if p.strip()]
        self.seeds, self.steps, self.size = list(seeds), steps, size
        self.cfg_scale, self.negative = cfg_scale, negative
        self.written: list[Path] = []

    def __call__(self, step: int, epoch: int = 0) -> list[Path]:
        from ..workspace import atomic_path

        if not self.prompts:
            return []
        images = self.generator.generate(self.prompts, negative=self.negative, seeds=self.seeds, steps=self.steps,
                                         cfg_scale=self.cfg_scale, size=self.size)
        paths = []
        for i, img in enumerate(images):
            path = self.folder / f"step{step:06d}-{i}.png"
            with atomic_path(path) as tmp:
                img.save(tmp, format="PNG")
            paths.append(path)
        self.written.extend(paths)
        log.info("samples at step %d (epoch %d): %s", step, epoch, ", ".join(p.name for p in paths))
        return paths


def sampler_for(cfg, generator, job_dir, *, seeds: Sequence[int] = (0,), steps: Optional[int] = None,
                size: Optional[int] = None) -> Optional[Sampler]:
    """The sampler a run's config asks for, or None when it asks for none (no prompts or no schedule).

    Prompts come from ``cfg.sample_prompts``; ``steps`` defaults to 20 and ``size`` to the training
    resolution. The caller passes the result as ``Callbacks(on_sample=...)``.
    """
    if not cfg.sample_prompts or not (cfg.sample_every_n_steps or cfg.sample_every_n_epochs):
        return None
    if job_dir is None:
        return None
    return Sampler(generator, job_dir, cfg.sample_prompts, seeds=seeds, steps=steps or 20,
                   size=size or cfg.resolution)
