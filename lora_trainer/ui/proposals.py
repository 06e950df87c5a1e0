"""What the tab proposes before a step starts, from the device and the model: the sizes of a run and a test
(``config.device_defaults``, smaller on a CPU) and the time a test will take.

The time comes from this project's newest finished generate job (seconds per sampling step per megapixel);
before any, from the last training run's seconds per step, an upper bound (a training step is a forward and
a backward pass, a sampling step two forward passes at most); before either, none is shown.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..config import device_defaults
from .common import fmt_seconds, project_jobs


def device_kind(service) -> str:
    kind = getattr(service, "device_kind", None)
    return kind() if kind is not None else "cpu"


def proposed(service) -> dict:
    """``{"train": overrides, "test": {"size", "steps", "seeds"}}`` for the service's model and device."""
    return device_defaults(service.models.preset(), device_kind(service))


def saved_config(service, project: str) -> bool:
    """Whether the project has a config of its own (its first run saved it): then that wins over proposals."""
    return (service.project(project).root / "train.toml").is_file()


def generation_rate(service, project: Optional[str]) -> Optional[float]:
    """Seconds per sampling step per megapixel of the project's newest finished generate job, or None."""
    if not project:
        return None
    for st in reversed(project_jobs(service, project, ("generate",))):
        cfg, res = st.get("config") or {}, st.get("result") or {}
        if st.get("status") != "finished" or not st.get("started") or not st.get("finished"):
            continue
        n, steps, size = len(res.get("images") or []), int(cfg.get("steps") or 0), int(cfg.get("size") or 0)
        if n and steps and size:
            return (st["finished"] - st["started"]) / (n * steps * size * size / 1e6)
    return None


def test_seconds(images: int, steps: int, size: int, rate: float) -> float:
    """Seconds for ``images`` images of ``steps`` steps at ``size``² with ``rate`` s per step per megapixel."""
    return images * steps * size * size / 1e6 * rate


def test_time_text(service, t: Callable[..., str], project: Optional[str], images: int, steps: int,
                   size: int) -> str:
    """The line the Test step shows before Generate / Build grid."""
    if not project or images <= 0 or steps <= 0 or size <= 0:
        return ""
    rate = generation_rate(service, project)
    if rate is not None:
        return t("{n} image(s) × {steps} steps at {size} px: about {time} (measured on the last test)",
                 n=images, steps=steps, size=size, time=fmt_seconds(test_seconds(images, steps, size, rate)))
    from .step_train import last_seconds_per_step

    sps = last_seconds_per_step(service, project)
    if sps is None:
        return t("{n} image(s) × {steps} steps at {size} px: the first test measures the time",
                 n=images, steps=steps, size=size)
    cfg = service.train_config(project)
    rate = sps / (cfg.resolution * cfg.resolution / 1e6)
    return t("{n} image(s) × {steps} steps at {size} px: at most {time} (from the last training run's "
             "{sps:.3g} s/step)", n=images, steps=steps, size=size,
             time=fmt_seconds(test_seconds(images, steps, size, rate)), sps=sps)
