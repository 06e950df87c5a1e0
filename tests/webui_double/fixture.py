"""The ``webui_double`` fixture: the WebUI double in ``sys.modules`` for one test, with a fresh tiny ldm model.

Use it with ``from webui_double.fixture import webui_double  # noqa: F401`` in a test module. It yields a
``WebUIDouble``: ``.m("shared")`` etc. are the double's modules, ``.model`` is ``shared.sd_model`` (a real
``LatentDiffusion``), ``.lora_dir`` the Lora folder, ``.root`` the WebUI data folder. On teardown the host
adapter's Service is shut down and every double module leaves ``sys.modules`` again (whatever was there
before is put back).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
DOUBLE_MODULES = (
    "paths_internal", "paths", "options", "shared_state", "fifo_lock", "call_queue", "devices", "shared", "sd_models",
    "sd_unet", "sd_samplers", "launch_utils", "progress", "script_callbacks", "processing", "deepbooru", "interrogate",
    "textual_inversion", "textual_inversion.autocrop",
)


def _ours(name: str) -> bool:
    return name == "modules" or name.startswith("modules.") or name == "networks"


class WebUIDouble:
    def __init__(self, root: Path):
        self.root = root
        self.models_path = root / "models"
        self.lora_dir = self.models_path / "Lora"
        self.modules: dict[str, types.ModuleType] = {}
        self.model = None

    def m(self, name: str) -> types.ModuleType:
        return self.modules[name]

    @property
    def shared(self):
        return self.modules["shared"]

    @property
    def state(self):
        return self.modules["shared"].state

    @property
    def networks(self):
        return self.modules["networks"]

    def flags(self, **values) -> None:
        """Set command-line flags (``shared.cmd_opts``), e.g. ``flags(lowvram=True)``."""
        for k, v in values.items():
            setattr(self.shared.cmd_opts, k, v)

    def add_interrogator_files(self, deepbooru: bool = True, clip: bool = True) -> None:
        """Put the files the WebUI's interrogators would otherwise download where it looks for them."""
        if deepbooru:
            d = self.models_path / "torch_deepdanbooru"
            d.mkdir(parents=True, exist_ok=True)
            (d / "model-resnet_custom_v3.pt").write_bytes(b"double")
        if clip:
            (self.models_path / "BLIP").mkdir(parents=True, exist_ok=True)
            (self.models_path / "BLIP" / "model_base_caption_capfilt_large.pth").write_bytes(b"double")
            repo = Path(self.m("paths").paths["BLIP"]) / "configs"
            repo.mkdir(parents=True, exist_ok=True)
            (repo / "med_config.json").write_text("{}")
            clip_dir = self.root / "clip"
            clip_dir.mkdir(exist_ok=True)
            (clip_dir / "ViT-L-14.pt").write_bytes(b"double")
            self.flags(clip_models_path=str(clip_dir))
            content = Path(self.shared.interrogator.content_dir)
            content.mkdir(parents=True, exist_ok=True)
            (content / "mediums.txt").write_text("a photograph\na painting\n")
            (content / "flavors.txt").write_text("highly detailed\nsharp focus\nbokeh\n")


def build_model(seed: int = 0):
    """The tiny real ``LatentDiffusion`` with what the WebUI adds when it loads a checkpoint."""
    from ldm_models import tiny_latent_diffusion

    model = tiny_latent_diffusion(seed=seed)
    model.sd_checkpoint_info = types.SimpleNamespace(
        filename="/models/Stable-diffusion/tiny.safetensors", name="tiny.safetensors", name_for_extra="tiny",
        model_name="tiny", title="tiny.safetensors [0123456789]", hash="01234567", shorthash="0123456789")
    model.sd_model_hash = "0123456789"
    model.is_sd1, model.is_sd2, model.is_sdxl, model.is_sd3 = True, False, False, False
    return model


def install(root: Path, seed: int = 0) -> tuple[WebUIDouble, dict]:
    """Put the double into ``sys.modules``; returns it and what it displaced (for ``uninstall``)."""
    displaced = {k: sys.modules.pop(k) for k in list(sys.modules) if _ours(k)}
    for p in (str(HERE), str(HERE / "lora_ext"), str(TESTS)):
        if p not in sys.path:
            sys.path.insert(0, p)
    d = WebUIDouble(root)
    importlib.invalidate_caches()
    pi = importlib.import_module("modules.paths_internal")
    pi.data_path = pi.script_path = str(root)
    pi.models_path = str(d.models_path)
    pi.default_output_dir = str(root / "outputs")
    for name in DOUBLE_MODULES:
        d.modules[name] = importlib.import_module(f"modules.{name}")
    d.m("paths").paths["BLIP"] = str(root / "repositories" / "BLIP")
    shared = d.shared
    d.lora_dir.mkdir(parents=True, exist_ok=True)
    shared.cmd_opts.lora_dir = str(d.lora_dir)
    shared.interrogator = d.m("interrogate").InterrogateModels(str(root / "interrogate"))
    d.model = build_model(seed)
    shared.sd_model = d.model
    d.m("sd_models").model_data.set_sd_model(d.model)
    d.modules["networks"] = importlib.import_module("networks")
    d.networks.assign_network_names_to_compvis_modules(d.model)
    d.networks.list_available_networks()
    return d, displaced


def uninstall(displaced: dict) -> None:
    host = sys.modules.get("lora_trainer.host.webui")
    if host is not None:
        host.shutdown_service(timeout=30)
    for k in [k for k in sys.modules if _ours(k)]:
        del sys.modules[k]
    sys.modules.update(displaced)
    for p in (str(HERE), str(HERE / "lora_ext")):
        while p in sys.path:
            sys.path.remove(p)


@pytest.fixture
def webui_double(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "webui"
    root.mkdir()
    monkeypatch.chdir(root)  # the WebUI runs from its root (relative paths such as "interrogate")
    d, displaced = install(root)
    try:
        yield d
    finally:
        uninstall(displaced)
