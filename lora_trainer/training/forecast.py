"""Before a run: how many steps, how many minutes, how much memory — measured, not guessed.

Total steps come from the same bucket rule the trainer uses (only image headers are read, no VAE).
Minutes come from a short warm-up on the real backend: one batch of the largest bucket is encoded, a
throw-away network is built exactly as the run will build it, then steps are timed one by one until a few
seconds have passed, and only the steady state counts (``steady_seconds``): the first steps of a process pay
for kernel selection, allocator growth and lazy initialisation and can be many times slower than the rest
(a toy run forecast from its first steps at ~38 s, 1.42 s/step, took 5.6 s). The bench's ``forecast`` row
puts the forecast beside the run it forecasts. Peak memory is what that warm-up used: on CUDA
``max_memory_allocated`` (plus the latent cache of every image and a headroom for the allocator), on CPU
the rise of the process's peak resident memory (Linux ``VmHWM``, reset first). ``fits`` compares the extra memory the run needs with
what the device has free, and ``warning`` says what to change when it does not fit.

The base model is left exactly as it was: the warm-up runs inside ``frozen`` and ``network.applied``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from statistics import median
from typing import Iterator, Optional, Sequence

import torch

HEADROOM = 0.15  # allocator fragmentation and cached blocks on top of the measured peak


# --------------------------------------------------------------------------------------------- steps

def plan_buckets(scan, cfg) -> list[tuple[int, int]]:
    """Each image's bucket, by the rule ``Trainer._prepare_data`` applies."""
    from . import data as D

    if not cfg.enable_buckets:
        return [(cfg.resolution, cfg.resolution)] * len(scan.items)
    buckets = D.make_buckets(cfg.resolution, cfg.min_bucket_reso, cfg.max_bucket_reso, cfg.bucket_step)
    return [D.assign_bucket(*D.image_size(it.path), buckets, cfg.resolution, cfg.bucket_step, cfg.bucket_no_upscale)
            for it in scan.items]


def planned_steps(scan, cfg, bucket_of: Optional[list] = None) -> int:
    """The run's total optimizer steps (buckets never mix in a batch, so this can exceed images×repeats÷batch)."""
    from . import data as D
    from .loop import total_steps

    bucket_of = bucket_of if bucket_of is not None else plan_buckets(scan, cfg)
    return total_steps(cfg, D.steps_per_epoch(bucket_of, [it.repeats for it in scan.items], cfg.batch_size))


# --------------------------------------------------------------------------------------------- warm-up

@contextlib.contextmanager
def warm_trainer(backend, scan, cfg, bucket_of: Optional[list] = None) -> Iterator:
    """A ``Trainer`` ready to call ``_step(batch, False)``: latents of one batch of the largest bucket,
    the network and optimizer built as the run builds them, attached; everything undone on exit.

    Yields ``(trainer, batch_indices)``. Used by the forecast and by the feature benchmark.
    """
    from . import data as D
    from .backend import frozen
    from .loop import Trainer

    bucket_of = bucket_of if bucket_of is not None else plan_buckets(scan, cfg)
    biggest = max(set(bucket_of), key=lambda b: (b[0] * b[1], b))
    members = [it for it, b in zip(scan.items, bucket_of) if b == biggest]
    # The run batches at most batch_size items of one bucket; repeats fill a batch when the bucket is small.
    picked = [members[i % len(members)] for i in range(min(cfg.batch_size, sum(it.repeats for it in members)))]
    uniq = list(dict.fromkeys(id(it) for it in picked))
    by_id = {id(it): it for it in picked}
    sub = D.DatasetScan([by_id[i] for i in uniq], [], {})
    batch = [uniq.index(id(it)) for it in picked]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lora-trainer-warmup-") as tmp:
        tr = Trainer(backend, sub, cfg, Path(tmp), name="warmup")
        tr.alphas = backend.alphas_cumprod().to(tr.device, torch.float32)
        tr.v_pred = backend.prediction_type == "v_prediction"
        gc_set = getattr(backend, "set_gradient_checkpointing", None)
        with frozen(*backend.modules().values()):
            tr._prepare_data()
            tr.total = planned_steps(scan, cfg, bucket_of)
            tr._prepare_network()
            if cfg.gradient_checkpointing and gc_set:
                gc_set(True)
            try:
                with tr.network.applied():
                    yield tr, batch
            finally:
                if cfg.gradient_checkpointing and gc_set:
                    gc_set(False)
                tr.optimizer.zero_grad(set_to_none=True)
                del tr.optimizer, tr.network


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steady_seconds(times: Sequence[float], tol: float = 0.25) -> tuple[float, int]:
    """(seconds per step in the steady state, how many leading warm-up steps were left out).

    The rule: the reference is the median of the last half of the times; the warm-up is the longest run of
    leading steps slower than ``(1 + tol)`` × that reference; the steady state is the mean of the steps after
    it (a mean, not a median, so an occasional slow step later on still counts, as it does in the run).
    """
    if not times:
        raise ValueError("no step times")
    n = len(times)
    ref = median(times[n // 2:])
    k = 0
    while k < n - 1 and times[k] > (1 + tol) * ref:
        k += 1
    rest = times[k:]
    return sum(rest) / len(rest), k


def step_times(tr, batch: list, min_steps: int = 3, budget_s: float = 5.0, max_steps: int = 40) -> list[float]:
    """Seconds of each step, synced one by one: at least ``min_steps``, then more until ``budget_s`` seconds
    have passed or ``max_steps`` were timed (a slow model stops early, a fast one gets enough to settle)."""
    out: list[float] = []
    t_all = time.perf_counter()
    while len(out) < max(1, min_steps) or (len(out) < max_steps and time.perf_counter() - t_all < budget_s):
        sync(tr.device)
        t0 = time.perf_counter()
        float(tr._step(batch, False))  # the loss read syncs the step
        sync(tr.device)
        out.append(time.perf_counter() - t0)
    return out


def time_steps(tr, batch: list, steps: int, untimed: int = 1) -> float:
    """Seconds per optimizer step over ``steps`` timed steps after ``untimed`` first ones."""
    for _ in range(untimed):
        tr._step(batch, False)
    sync(tr.device)
    t0 = time.perf_counter()
    loss = torch.zeros((), device=tr.device)
    for _ in range(steps):
        loss += tr._step(batch, False)
    float(loss)  # one sync at the end, as the loop does every few steps
    sync(tr.device)
    return (time.perf_counter() - t0) / max(1, steps)


# --------------------------------------------------------------------------------------------- memory

def _proc_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class HostPeak:
    """Peak resident memory of this process during a block, in MiB.

    Linux: reset ``VmHWM`` through ``/proc/self/clear_refs`` and read it after; elsewhere a sampling thread
    (every 5 ms) over the current RSS (psutil when present).
    """

    def __init__(self):
        self.before_mb = self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._hwm = False

    @staticmethod
    def rss_mb() -> float:
        kb = _proc_status_kb("VmRSS")
        if kb is not None:
            return kb / 1024
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except ImportError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def __enter__(self) -> "HostPeak":
        self.before_mb = self.peak_mb = self.rss_mb()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")
            self._hwm = _proc_status_kb("VmHWM") is not None
        except OSError:
            self._hwm = False
        if not self._hwm:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __exit__(self, *exc) -> None:
        if self._hwm:
            self.peak_mb = max(self.peak_mb, _proc_status_kb("VmHWM") / 1024)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())


def free_memory_mb(device: torch.device) -> float:
    """What the device has free now: CUDA ``mem_get_info``; CPU ``MemAvailable``."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free / 2**20
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20
    except ImportError:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    return float("inf")


# --------------------------------------------------------------------------------------------- forecast

def forecast_run(backend, data, cfg, *, warmup_steps: int = 3, free_mb: Optional[float] = None,
                 budget_s: float = 5.0) -> dict:
    """Steps, minutes and memory for training ``cfg`` on ``backend`` over ``data`` (folder or DatasetScan).

    ``warmup_steps`` steps are timed at least, more until ``budget_s`` seconds have passed; the steady state
    of those times (``steady_seconds``) gives ``seconds_per_step``. Returns ``{"steps", "seconds_per_step",
    "minutes", "cache_seconds", "peak_mb", "extra_mb", "free_mb", "fits", "warning", "device",
    "timed_steps", "warmup_left_out", "first_step_seconds"}``. ``free_mb`` overrides the measured free memory
    (for tests and for a host that knows better). ``peak_mb`` is the device's expected peak during the run
    (model included); ``extra_mb`` the part the run adds on top of what is allocated now, which is what must fit in
    ``free_mb``.
    """
    from . import data as D

    scan = data if isinstance(data, D.DatasetScan) else D.scan_dataset(data, cfg.repeats)
    dev = backend.device
    bucket_of = plan_buckets(scan, cfg)
    steps = planned_steps(scan, cfg, bucket_of)
    free = free_memory_mb(dev) if free_mb is None else float(free_mb)
    if dev.type == "cuda":
        sync(dev)
        base = torch.cuda.memory_allocated(dev) / 2**20
        torch.cuda.reset_peak_memory_stats(dev)
        with warm_trainer(backend, scan, cfg, bucket_of) as (tr, batch):
            times = step_times(tr, batch, warmup_steps, budget_s)
            cache_s = tr.cache_seconds / max(1, len(tr.latents))
            latent_mb = _latent_cache_mb(tr, scan, bucket_of)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        extra = (peak - base) * (1 + HEADROOM) + latent_mb
        peak_total = base + extra
    else:
        with HostPeak() as hp:
            with warm_trainer(backend, scan, cfg, bucket_of) as (tr, batch):
                times = step_times(tr, batch, warmup_steps, budget_s)
                cache_s = tr.cache_seconds / max(1, len(tr.latents))
                latent_mb = _latent_cache_mb(tr, scan, bucket_of)
        extra = max(0.0, hp.peak_mb - hp.before_mb) * (1 + HEADROOM) + latent_mb
        peak_total = hp.before_mb + extra
    sps, left_out = steady_seconds(times)
    cache_seconds = cache_s * len(scan.items)
    fits = extra <= free
    warning = None
    if not fits:
        warning = (f"this run needs about {extra / 1024:.1f} GiB more {_where(dev)} memory but only "
                   f"{free / 1024:.1f} GiB is free: lower the batch size or resolution, turn on gradient "
                   f"checkpointing, or lower the rank")
    return {"steps": steps, "seconds_per_step": sps, "minutes": (steps * sps + cache_seconds) / 60,
            "cache_seconds": cache_seconds, "peak_mb": peak_total, "extra_mb": extra, "free_mb": free,
            "fits": fits, "warning": warning, "device": str(dev), "warmup_steps": warmup_steps,
            "timed_steps": len(times), "warmup_left_out": left_out, "first_step_seconds": times[0]}


def _where(dev: torch.device) -> str:
    return "GPU" if dev.type == "cuda" else "system"


def _latent_cache_mb(tr, scan, bucket_of) -> float:
    """The latents of every image kept on the device (cache_latents): size from the warm-up's latents."""
    if not tr.cfg.cache_latents or not tr.latents:
        return 0.0
    lat = tr.latents[0]
    per_px = lat.numel() * lat.element_size() / (tr.bucket_of[0][0] * tr.bucket_of[0][1])
    copies = 2 if tr.cfg.flip_aug else 1  # the mirrored images' latents too
    return copies * sum(w * h * per_px for w, h in bucket_of) / 2**20


def format_forecast(fc: dict) -> str:
    """One line for the CLI and the tab: ``1050 steps · ~12 min · peak ~7.9 GiB (free 22.1 GiB)``."""
    mins = fc["minutes"]
    t = f"~{mins:.0f} min" if mins >= 1 else f"~{mins * 60:.0f} s"
    line = (f"{fc['steps']} steps · {t} ({fc['seconds_per_step']:.3g} s/step on {fc['device']}) · "
            f"peak ~{fc['peak_mb'] / 1024:.2f} GiB (free {fc['free_mb'] / 1024:.1f} GiB)")
    return line + (f" · WARNING: {fc['warning']}" if fc["warning"] else "")


__all__ = ["forecast_run", "format_forecast", "planned_steps", "plan_buckets", "warm_trainer", "time_steps",
           "steady_seconds", "step_times",
           "HostPeak", "free_memory_mb"]
