"""The host adapter's front door: what the scripts entry, the tab and the API get from the WebUI.

``get_service()`` is the one ``Service`` of this WebUI process: its workspace comes from our settings, its
models from ``HostModels`` (the loaded checkpoint, the WebUI's txt2img, its Lora folder), and its runner holds
the WebUI's queue lock around every job while mirroring progress into ``shared.state``. ``host_info()``
tells the tab what this host can do. ``on_model_loaded``/``on_script_unloaded`` stop a running job (which
restores the host model in its own ``finally``).

Only modules under ``lora_trainer/host/`` import the WebUI's ``modules.*``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Optional

from .backend import HostBackend, model_family, refusal
from .crop import host_focal_box, host_focal_crop
from .env import (api_enabled, cmd_opt, host_kind, loaded_model, lora_dir, m, setting, webui_version,
                  workspace_dir)
from .generate import HostGenerator, host_samplers, publish
from .progress import HostJobLock, task_id
from .taggers import register_host_taggers, unregister_host_taggers

log = logging.getLogger("lora_trainer")

__all__ = ["HostModels", "HostBackend", "HostGenerator", "get_service", "shutdown_service", "stop_running_job",
           "on_model_loaded", "on_script_unloaded", "host_info", "publish", "host_focal_crop", "host_focal_box",
           "task_id"]

_service_lock = threading.Lock()
_service: Any = None


class HostModels:
    """``service.ModelProvider`` over the WebUI: the loaded checkpoint, its txt2img, its Lora folder."""

    def backend(self) -> HostBackend:
        """Built for each job (the checkpoint may have changed in between); raises a UserError when the
        loaded model cannot be trained here."""
        return HostBackend()

    def preset(self) -> Optional[dict]:
        family = model_family(loaded_model())
        if family == "sd2-v":
            return {"train_text_encoder": False, "resolution": 768}
        if family == "sd2":
            return {"train_text_encoder": False}
        return None

    def generator(self, backend: Any) -> HostGenerator:
        return HostGenerator()

    def sample_generator(self, backend: Any) -> HostGenerator:
        return HostGenerator(keep_training_adapters=True)

    def samplers(self) -> list[str]:
        """The WebUI's visible samplers, the one in Settings → LoRA Trainer first (when the WebUI has it)."""
        names = host_samplers()
        first = setting("lora_trainer_test_sampler")
        return ([first] if first in names else []) + [n for n in names if n != first]

    def publish(self, lora_file: Path, name: str, always: bool = False) -> Optional[Path]:
        return publish(lora_file, name, always)

    def test_copies(self, lora_files: list) -> list:
        from .generate import test_copies

        return test_copies(lora_files)

    def device_kind(self) -> str:
        """Where the WebUI computes (``devices.device``): "cuda", "cpu", "mps" …"""
        return getattr(getattr(m("devices"), "device", None), "type", None) or "cpu"


def get_service():
    """The process's Service (created on first use: the tab, the API and the callbacks share it)."""
    global _service
    with _service_lock:
        if _service is None:
            from ..service import Service

            register_host_taggers()
            from ..prepare.crop import register_crop_mode
            from .crop import host_focal_box

            register_crop_mode("focal", host_focal_box)  # the WebUI's focal-point crop as a prepare mode
            job_lock = HostJobLock()
            service = Service(workspace_dir(), models=HostModels(), lock=job_lock)
            job_lock.runner = service.runner
            service.runner.subscribe(job_lock.mirror)
            service.host_lock = job_lock
            _service = service
        return _service


def shutdown_service(timeout: float = 60.0) -> None:
    """Cancel queued and running jobs, wait for the worker (the host model is restored by the job's own
    ``finally``), and forget the Service; taggers are unregistered. Safe to call when none exists."""
    global _service
    with _service_lock:
        service, _service = _service, None
    if service is None:
        return
    service.runner.shutdown(cancel_running=True, timeout=timeout)
    unregister_host_taggers()
    from ..prepare.crop import unregister_crop_mode

    unregister_crop_mode("focal")


def stop_running_job(reason: str, timeout: float = 30.0) -> Optional[str]:
    """Cancel the running job; wait for it when it holds the queue lock and we are not its own thread
    (a job waiting for the lock has not touched the model, and waiting for it there could deadlock)."""
    service = _service
    if service is None:
        return None
    job = service.runner.running()
    if job is None:
        return None
    log.warning("stopping LoRA Trainer job %s: %s", job, reason)
    service.runner.cancel(job)
    holds_lock = service.host_lock.job_id == job
    if holds_lock and threading.current_thread() is not getattr(service.runner, "_thread", None):
        try:
            service.runner.wait(job, timeout=timeout)
        except TimeoutError:
            log.error("job %s did not stop within %.0f s", job, timeout)
    return job


def on_model_loaded(sd_model: Any = None) -> None:
    """A checkpoint was (re)loaded: a running job's model is gone or changed under it."""
    stop_running_job("the checkpoint changed")


def on_script_unloaded() -> None:
    """Reload UI re-imports the scripts: leave no thread or patch behind."""
    shutdown_service()


def host_info() -> dict:
    """What the tab shows about the host (never loads a model).

    Keys the tab reads: ``host`` (e.g. "WebUI v1.10.1"), ``family``, ``lang``, ``warnings``, ``can_train``,
    ``disabled_features``; also ``host_kind`` (a1111, forge1, forge2), ``model``, ``cannot_train_reason``,
    ``lora_dir``, ``workspace``, our settings' values and ``api_enabled``.
    """
    from ..compat import version_of
    from ..install_plan import disabled_features

    model = loaded_model()
    kind = host_kind()
    try:
        problem = refusal(model) if model is not None or kind == "forge2" else None
    except Exception as exc:  # noqa: BLE001 - an odd host must not break the tab
        problem = exc
    family = model_family(model)
    warnings = []
    if kind == "forge1":
        warnings.append("Forge 1: training in place is supported; report problems with the Forge version")
    if family in ("sd2", "sd2-v"):
        warnings.append("SD2: UNet only (its open_clip text encoder cannot carry a LoRA here)")
    if cmd_opt("medvram", False):
        warnings.append("--medvram: sub-models move between CPU and GPU during training (slower)")
    try:
        disabled = disabled_features()  # the tab lists these itself
    except Exception:  # noqa: BLE001
        disabled = {}
    gradio_version = version_of("gradio")
    # No model yet (the WebUI loads it in the background while the UI is built): the job loads it and
    # refuses it then if it must; the tab's buttons stay on.
    can_train = problem is None
    reason = str(problem) if problem is not None else ""
    if problem is not None:
        warnings.insert(0, f"Training is off: {reason}")
    info = getattr(model, "sd_checkpoint_info", None)
    kind_label = {"a1111": "WebUI", "forge1": "Forge 1", "forge2": "Forge 2"}.get(kind, kind)
    return {
        "host": f"{kind_label} {webui_version()}",
        "host_kind": kind,
        "webui_version": webui_version(),
        "gradio": gradio_version,
        "lang": _localization(),
        "family": family,
        "model": {"loaded": model is not None, "family": family,
                  "name": getattr(info, "model_name", None), "title": getattr(info, "title", None)},
        "can_train": can_train,
        "cannot_train_reason": reason,
        "warnings": warnings,
        "disabled_features": disabled,
        "lora_dir": str(lora_dir()),
        "workspace": str(workspace_dir()),
        "host_taggers": ["deepbooru", "clip"],
        "default_tagger": setting("lora_trainer_default_tagger"),
        "rembg_model": setting("lora_trainer_rembg_model"),
        "api_enabled": api_enabled(),
    }


def _localization() -> Optional[str]:
    """The WebUI's UI language setting (``localization``, "None" when unset)."""
    try:
        value = m("shared").opts.data.get("localization")
    except Exception:  # noqa: BLE001
        return None
    return value if value and value != "None" else None
