"""The one application layer the tab and the API share: projects in a workspace, and every long step as
a job on one JobRunner (no second job system).

A ``Service`` knows nothing about gradio or HTTP. Where the model and the test generator come from is
injected: standalone they come from ``models.load_backend`` and diffusers; in the WebUI the host adapter
passes its own ``ModelProvider`` (the loaded checkpoint, the WebUI's txt2img, the Lora folder).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from . import paths
from .config import TrainConfig, dump_toml, from_dict, load_file, sanitize_name, to_dict
from .errors import UserError
from .jobs import JobContext, JobRunner
from .workspace import Project, write_json, write_text

PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ModelProvider(Protocol):
    """Where a job gets its model, its preset and its test generator."""

    def backend(self) -> Any:
        """A ModelBackend, loaded on first use (inside the job, on the worker thread)."""
        ...

    def preset(self) -> Optional[dict]:
        """Config overrides for this model (the toy preset for the embedded model), or None."""
        ...

    def generator(self, backend: Any) -> Any:
        """A ``generate.Generator`` for test images on this model."""
        ...

    def sample_generator(self, backend: Any) -> Any:
        """A ``generate.Generator`` for samples during training: it draws with the training LoRA attached."""
        ...

    def samplers(self) -> list[str]:
        """The sampler names the test generator takes; the first is its default."""
        ...

    # Optional: ``sampling() -> dict`` (steps, cfg_scale, sampler), the test-image defaults for this model
    # (``Service.sampling``); a provider without it gets config.DEFAULT_SAMPLING.

    def publish(self, lora_file: Path, name: str, always: bool = False) -> Optional[Path]:
        """Make a finished LoRA usable where the user generates (the WebUI's Lora folder); None standalone.
        After training it follows the user's setting; ``always`` when the user picked a file to publish."""
        ...

    # Optional (looked up with getattr, so older providers still fit):
    # ``test_copies(lora_files) -> list[Path]``: the copies the test generator made of these files outside the
    # workspace (the WebUI's Lora folder), for the project's disk use and cleanup;
    # ``device_kind() -> str``: "cuda", "cpu", "mps" … where jobs will compute, without loading a model.


@dataclass
class StandaloneModels:
    """ModelProvider for the CLI, ``ui`` and ``serve``: ``base_model`` or the embedded toy model."""

    base_model: Optional[str] = None
    device: Optional[str] = None
    _backend: Any = field(default=None, repr=False)

    def backend(self):
        if self._backend is None:
            import torch

            from .models import load_backend

            dev = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self._backend, _ = load_backend(self.base_model, dev)
        return self._backend

    def preset(self) -> Optional[dict]:
        from .models import preset_for

        return preset_for(self.base_model)

    def generator(self, backend):
        from .generate import DiffusersGenerator

        return DiffusersGenerator(backend)

    def sample_generator(self, backend):
        return self.generator(backend)  # the diffusers pipeline runs over the backend's modules, LoRA attached

    def samplers(self) -> list[str]:
        from .generate import SAMPLERS

        return list(SAMPLERS)

    def sampling(self) -> dict:
        from .models import sampling_for

        return sampling_for(self.base_model)

    def publish(self, lora_file: Path, name: str, always: bool = False) -> Optional[Path]:
        return None

    def check(self) -> None:
        """The base model's file or folder, checked without loading it (a UserError naming it)."""
        if self.base_model:
            from .model_files import check_base_model

            check_base_model(self.base_model)

    def device_kind(self) -> str:
        if self.device:
            return str(self.device).split(":")[0]
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


class Service:
    """Projects under ``workspace`` and the jobs that work on them."""

    def __init__(self, workspace: str | Path, models: Optional[ModelProvider] = None,
                 runner: Optional[JobRunner] = None, lock: Any = None):
        self.workspace = Path(workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.models = models or StandaloneModels()
        self.runner = runner or JobRunner(self.workspace, lock=lock, pattern="*/jobs/*/state.json")

    # ---- projects ----------------------------------------------------------------------------------
    def project(self, name: str) -> Project:
        if not PROJECT_NAME.match(name or ""):
            raise UserError(f"invalid project name {name!r}",
                            f"use ASCII letters, digits, . _ - (e.g. {sanitize_name(name or 'project')!r})")
        p = self._confined(Project(self.workspace, name))
        if not (p.root / "project.json").is_file():
            raise UserError(f"no project named {name!r}", "create it first")
        return p

    def _confined(self, p: Project) -> Project:
        """``p`` if neither its folder nor its standard subfolders lead out of the workspace (a symlinked
        project would make every step read and write there); ``paths.PathRefused`` (403) otherwise."""
        for folder in [p.root] + [p.root / sub for sub in Project.SUBFOLDERS]:
            paths.confine(folder, [self.workspace], f"project {p.name!r}:",
                          hint="move the project's folder into the workspace, or remove the link")
        return p

    def create_project(self, name: str, trigger: str = "", repeats: int = 30) -> dict:
        if not PROJECT_NAME.match(name or ""):
            raise UserError(f"invalid project name {name!r}",
                            f"use ASCII letters, digits, . _ - (e.g. {sanitize_name(name or 'project')!r})")
        p = self._confined(Project(self.workspace, name))
        if (p.root / "project.json").exists():
            raise UserError(f"project {name!r} already exists", "pick another name or open it")
        p.create()
        info = {"name": name, "trigger": trigger, "repeats": repeats, "created": time.time()}
        write_json(p.root / "project.json", info)
        return self.project_info(name)

    def projects(self) -> list[dict]:
        out = []
        for d in paths.entries(self.workspace):  # (a project folder linked from outside is not listed)
            if PROJECT_NAME.match(d.name) and (d / "project.json").is_file() \
                    and not any(paths.leads_out(d / sub, [self.workspace]) for sub in Project.SUBFOLDERS):
                out.append(self.project_info(d.name))
        return out

    def project_info(self, name: str) -> dict:
        p = self.project(name)
        info = json.loads((p.root / "project.json").read_text(encoding="utf-8"))
        info["source_images"] = _count_images(p.source, "source")
        dataset = self.dataset_dir(name)
        info["dataset_dir"] = str(dataset)
        info["dataset_images"] = _count_images(dataset)
        info["outputs"] = [f.name for f in paths.entries(p.output, pattern="*.safetensors")]
        return info

    def update_project(self, name: str, **fields: Any) -> dict:
        p = self.project(name)
        info = json.loads((p.root / "project.json").read_text(encoding="utf-8"))
        info.update({k: v for k, v in fields.items() if k in ("trigger", "repeats")})
        write_json(p.root / "project.json", info)
        return self.project_info(name)

    def delete_project(self, name: str) -> None:
        p = self.project(name)
        if self.runner.running() and any(s["config"].get("project") == name for s in self.runner.list()
                                         if s["status"] == "running"):
            raise UserError(f"project {name!r} has a running job", "cancel it first")
        self._remove_host_copies(name)  # outside the project folder: they would outlive it
        paths.remove_tree(p.root, [self.workspace], f"project {name!r}")  # a link inside: only the link goes

    def dataset_dir(self, name: str) -> Path:
        """The kohya folder ``dataset/<repeats>_<trigger or name>`` the training step reads."""
        p = self.project(name)  # a bad or missing project is the caller's 400/404, not a FileNotFoundError
        info = json.loads((p.root / "project.json").read_text(encoding="utf-8"))
        from .training.data import parse_kohya_dirname

        existing = sorted(d for d in p.dataset.iterdir() if d.is_dir() and parse_kohya_dirname(d.name)) \
            if p.dataset.is_dir() else []
        if existing:
            paths.confine(existing[0], [self.workspace], "the dataset folder")
            return existing[0]
        return p.dataset / f"{info.get('repeats', 30)}_{sanitize_name(info.get('trigger') or name)}"

    # ---- images ------------------------------------------------------------------------------------
    def add_images(self, name: str, files: list[Path]) -> dict:
        """Check uploaded files (or zips) and copy the good ones into ``source/``; the uploads themselves are
        not touched. ``{"copied", "rejected", "duplicates", "source_images"}``: each refused file by name with
        its reason, exact duplicates of what the project has (or of an earlier file of the batch) skipped
        and named, and the project's source-image count after the import (``importer.copy_into``)."""
        from .prepare.importer import copy_into

        p = self.project(name)
        report = copy_into([Path(f) for f in files], p.source)
        report["source_images"] = _count_images(p.source, "source")
        return report

    def image_folder(self, name: str, where: str = "dataset") -> Path:
        """The project's ``source/`` (``where="source"``) or its dataset folder."""
        return self.project(name).source if where == "source" else self.dataset_dir(name)

    def images(self, name: str, where: str = "dataset") -> list[str]:
        folder = self.image_folder(name, where)
        exts = _image_exts(where)
        # (a link leading out of the folder is not listed: listed means downloadable, as get_image checks)
        return [f.name for f in paths.entries(folder)
                if f.suffix.lower() in exts and not f.name.endswith(".mask.png")]

    def delete_image(self, name: str, image: str, where: str = "dataset") -> None:
        folder = self.image_folder(name, where)
        target = paths.child(folder, image, "image")
        if target.parent != folder.resolve() or not target.is_file():
            raise UserError(f"no image {image!r} in the project's {where}", "list the images first")
        from .prepare.importer import thumbnail_path

        for sib in [thumbnail_path(target, self.thumbs_dir(name)), target, target.with_suffix(".txt"),
                    target.with_suffix(".caption"), target.with_name(target.stem + ".mask.png")]:
            sib.unlink(missing_ok=True)

    def thumbs_dir(self, name: str) -> Path:
        """``<project>/cache/thumbs``: JPEG views of source photos browsers cannot show (HEIC, TIFF)."""
        return self.project(name).root / "cache" / "thumbs"

    # ---- jobs --------------------------------------------------------------------------------------
    def _submit(self, name: str, kind: str, config: dict, fn: Callable[[JobContext], Optional[dict]]) -> str:
        """Queue ``fn`` on the one runner; its folder is ``<project>/jobs/<job-id>/`` (INTERFACES §2)."""
        return self.runner.submit(kind, fn, config={"project": name, **config}, parent=self.project(name).jobs)

    def preprocess(self, name: str, options: Optional[dict] = None) -> str:
        """Import + crop + background (+ tag) from ``source/`` into the dataset folder."""
        from .prepare.config import PrepareConfig, TagConfig, split_options
        from .prepare.pipeline import tag_config
        from .tagging.autotag import ready_tagger

        p = self.project(name)
        prep_opts, tag_opts = split_options(dict(options or {}))
        prep = from_dict(PrepareConfig, prep_opts)
        tag = from_dict(TagConfig, tag_opts) if tag_opts else None
        tagging = tag_config(prep, tag)
        if tagging.tagger != "none":  # a missing tagger is refused now, not as a failed job
            ready_tagger(tagging)
        dest = self.dataset_dir(name)

        def job(ctx: JobContext) -> dict:
            from .prepare import prepare_folder

            report = prepare_folder(p.source, dest, prep, progress=ctx.progress, should_stop=ctx.should_stop,
                                    tag_cfg=tag)
            return {"counts": report.get("counts"), "report": str(dest / "report.json"),
                    "cancelled": report.get("cancelled", False)}

        return self._submit(name, "preprocess", {"prepare": dataclasses.asdict(prep)}, job)

    def autotag(self, name: str, options: Optional[dict] = None) -> str:
        from .prepare.config import TagConfig

        self.project(name)
        cfg = from_dict(TagConfig, dict(options or {}))
        folder = self.dataset_dir(name)
        from .tagging.autotag import ready_tagger, tag_folder

        ready_tagger(cfg)  # unknown or unavailable: refused now (a 400 from the API), not as a failed job

        def job(ctx: JobContext) -> dict:  # its own tagger, so the model it loads is freed with the job
            report = tag_folder(folder, cfg, progress=ctx.progress, should_stop=ctx.should_stop)
            skipped = [f for f in report["files"] if f["status"] == "skipped"]  # by name, for the tab's message
            return {**{k: v for k, v in report.items() if k != "files"}, "skipped": skipped}

        return self._submit(name, "tag", {"tag": dataclasses.asdict(cfg)}, job)

    def train_config(self, name: str, overrides: Optional[dict] = None) -> TrainConfig:
        """The project's saved config, under the model's preset, with ``overrides``; validated."""
        p = self.project(name)
        info = json.loads((p.root / "project.json").read_text(encoding="utf-8"))
        data: dict = dict(self.models.preset() or {})
        saved = p.root / "train.toml"
        if saved.is_file():
            data.update(load_file(saved))
        data.setdefault("name", sanitize_name(info.get("trigger") or name))
        data.setdefault("trigger_word", info.get("trigger", ""))
        # The project's repeats name its kohya folder (dataset/<repeats>_<name>), which is what training
        # reads: the config says the same, not the preset's or the recipe's number.
        if "repeats" in info:
            data["repeats"] = int(info["repeats"])
        data.update(overrides or {})
        return from_dict(TrainConfig, data)

    def save_train_config(self, name: str, cfg: TrainConfig) -> None:
        p = self.project(name)
        write_text(p.root / "train.toml", dump_toml(to_dict(cfg)))

    def estimate(self, name: str, overrides: Optional[dict] = None, probe: Optional[dict] = None) -> str:
        """The LR probe as a job. ``probe``: ``optimizer`` (DAdaptAdam/Prodigy), ``max_steps``, ``window``,
        ``epsilon`` of the plateau rule, ``resolution`` (the probe's image size) and ``range_steps`` (the
        estimate command's --probe-*/--plateau-*/--range-steps flags)."""
        from .training.estimate import PROBE_OPTIMIZERS, RANGE_STEPS, probe_resolution, reference_lr
        from .training.plateau import PlateauRule

        cfg = self.train_config(name, overrides)
        self._check_models()
        data = self.project(name).dataset  # the kohya root: its <repeats>_<name> folder gives the repeats
        probe = dict(probe or {})
        optimizer = probe.pop("optimizer", None) or "DAdaptAdam"
        unknown = set(probe) - {"max_steps", "window", "epsilon", "resolution", "range_steps"}
        if unknown or optimizer not in PROBE_OPTIMIZERS:
            raise UserError(f"unknown probe setting {sorted(unknown)[0] if unknown else optimizer!r}",
                            f"use optimizer ({', '.join(PROBE_OPTIMIZERS)}), max_steps, window, epsilon, "
                            f"resolution, range_steps")
        try:
            window = int(probe.get("window", PlateauRule.window))
            rule = PlateauRule(window=window, smooth=min(PlateauRule.smooth, window),
                               epsilon=float(probe.get("epsilon", PlateauRule.epsilon)),
                               max_steps=int(probe.get("max_steps", PlateauRule.max_steps)))
            range_steps = int(probe.get("range_steps", RANGE_STEPS))
            resolution = int(probe.get("resolution") or 0)
            if range_steps < 0 or resolution < 0:
                raise ValueError("range_steps and resolution must be 0 or more")
            cfg = from_dict(TrainConfig, dataclasses.asdict(probe_resolution(cfg, resolution)))
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad probe settings: {exc}", "see estimate --help") from None
        ref_lr, ref_source = reference_lr(self.models.preset())

        def job(ctx: JobContext) -> dict:
            from .training.estimate import estimate_lr
            from .training.loop import Callbacks

            est = estimate_lr(self.models.backend(), data, cfg, ctx.job_dir, optimizer=optimizer, rule=rule,
                              callbacks=Callbacks(on_progress=ctx.progress, on_log=ctx.log),
                              should_stop=ctx.should_stop, range_steps=range_steps, preset_lr=ref_lr,
                              preset_source=ref_source)
            return est.as_dict() if hasattr(est, "as_dict") else dataclasses.asdict(est)

        return self._submit(name, "estimate", {"train": dataclasses.asdict(cfg), "probe_optimizer": optimizer,
                                               "rule": dataclasses.asdict(rule), "range_steps": range_steps},
                            job)

    def train(self, name: str, overrides: Optional[dict] = None, resume_job: Optional[str] = None) -> str:
        p = self.project(name)
        if resume_job:
            self._check_models()
            saved = self.runner.get(resume_job)
            if saved is None or saved["kind"] != "train":
                raise UserError(f"no training job {resume_job!r}", "list the jobs and pick a train job")
            cfg = from_dict(TrainConfig, saved["config"]["train"])
        else:
            cfg = self.train_config(name, overrides)
            self._check_models()
            self.save_train_config(name, cfg)
        data = p.dataset  # the kohya root: its <repeats>_<name> folder gives the repeats

        def job(ctx: JobContext) -> dict:
            from .training import data as D
            from .training.loop import Callbacks, Trainer

            scan = D.scan_dataset(data, cfg.repeats)
            be = self.models.backend()
            sample_generator = getattr(self.models, "sample_generator", lambda _be: None)
            res = Trainer(be, scan, cfg, p.output,
                          Callbacks(on_progress=ctx.progress, on_log=ctx.log), ctx.should_stop, ctx.job_dir,
                          cfg.name, resume=resume_job is not None, generator=sample_generator(be)).run()
            published = self.models.publish(res.output, cfg.name) if res.output and not res.cancelled else None
            return {"output": str(res.output) if res.output else None, "saved": [str(s) for s in res.saved],
                    "steps": res.steps, "total_steps": res.total_steps, "loss": res.final_loss,
                    "cancelled": res.cancelled, "seconds": res.seconds, "optimizer": res.optimizer,
                    "warnings": res.warnings, "published": str(published) if published else None}

        if resume_job:
            return self.runner.submit("train", job, config=self.runner.get(resume_job)["config"], job_id=resume_job)
        # (a resumed job keeps its folder: the runner remembers where each job lives)
        return self._submit(name, "train", {"train": dataclasses.asdict(cfg)}, job)

    def generate(self, name: str, prompts: list[str], *, lora: Optional[str] = None, weight: float = 1.0,
                 negative: str = "", seeds: tuple = (0,), steps: Optional[int] = None,
                 cfg_scale: Optional[float] = None, size: int = 0, sampler: Optional[str] = None) -> str:
        """Test images with ``lora`` (a file name in the project's output/) into the job folder; ``sampler``
        one of ``samplers()`` (None: the generator's default); ``steps``/``cfg_scale`` None: the model's
        (``sampling()``)."""
        p = self.project(name)
        defaults = self.sampling()
        steps = int(steps) if steps is not None else int(defaults["steps"])
        cfg_scale = float(cfg_scale) if cfg_scale is not None else float(defaults["cfg_scale"])
        sampler = sampler or defaults["sampler"]
        if sampler and sampler not in self.samplers():
            raise UserError(f"unknown sampler {sampler!r}", "choose one of: " + ", ".join(self.samplers()))
        lora_path = None
        if lora:
            lora_path = paths.child(p.output, lora, "LoRA file")
            if lora_path.parent != p.output.resolve() or not lora_path.is_file():
                raise UserError(f"no LoRA file {lora!r} in the project", "list the outputs first")
            from .model_files import check_lora

            check_lora(lora_path, "LoRA")
        self._check_models()
        preset = self.models.preset() or {}
        size = size or int(preset.get("resolution", 512))

        def job(ctx: JobContext) -> dict:
            from .workspace import atomic_path

            be = self.models.backend()
            images = self.models.generator(be).generate(prompts, negative=negative, seeds=list(seeds), steps=steps,
                                                        cfg_scale=cfg_scale, size=size, sampler=sampler,
                                                        lora=str(lora_path) if lora_path else None, weight=weight)
            from PIL.PngImagePlugin import PngInfo

            files = []
            for i, img in enumerate(images):
                out = ctx.job_dir / f"image-{i:03d}.png"
                info = PngInfo()
                if img.info.get("parameters"):  # the WebUI's infotext (Lora hashes, seed, …)
                    info.add_text("parameters", img.info["parameters"])
                with atomic_path(out) as tmp:
                    img.save(tmp, format="PNG", pnginfo=info)
                files.append(out.name)
            return {"images": files}

        return self._submit(name, "generate", {"prompts": prompts, "lora": lora, "weight": weight,
                                               "seeds": list(seeds), "steps": steps, "cfg_scale": cfg_scale,
                                               "size": size, "sampler": sampler or self.samplers()[0]}, job)

    # ---- models a step can fetch (the model store) ------------------------------------------------
    def models_list(self) -> list[dict]:
        """Every model the store knows: where it goes, size, licence, downloaded or not."""
        from . import model_store

        return [model_store.describe(i) for i in model_store.CATALOGUE]

    def download_model(self, model_id: str) -> str:
        """Download a store model as a job (progress in bytes, cancel keeps the partial file). An unknown
        id fails here, before anything is queued. The job does not hold the host's queue lock."""
        from . import model_store

        model_store.get_spec(model_id)

        def job(ctx: JobContext) -> dict:
            def progress(ev: dict) -> None:
                ctx.progress({"phase": "download", "step": ev["done"], "total": ev["total"], "file": ev["file"]})

            folder = model_store.ensure(model_id, progress, ctx.should_stop)
            return {"model": model_id, "folder": str(folder)}

        return self.runner.submit("download", job, config={"model": model_id},
                                  parent=self.workspace / ".models" / "jobs", locked=False)

    def _check_models(self) -> None:
        """A bad base-model file is refused before a job is queued (the API answers 400 naming it), not as a
        job that fails after loading; providers without files to check (the host's) have no ``check``."""
        check = getattr(self.models, "check", None)
        if check is not None:
            check()

    def sampling(self) -> dict:
        """The Test step's defaults for the model (steps, cfg_scale, sampler: the toy model's CFG 3, an SD
        model's 7); the sampler is one of ``samplers()`` or None (the first)."""
        from .config import DEFAULT_SAMPLING

        fn = getattr(self.models, "sampling", None)
        out = {**DEFAULT_SAMPLING, **(fn() if fn is not None else {})}
        if out.get("sampler") not in self.samplers():
            out["sampler"] = None
        return out

    def samplers(self) -> list[str]:
        """The Test step's sampler names (the WebUI's in the WebUI, diffusers schedulers standalone); the
        first is the default. A provider that names none gets the standalone list."""
        names = getattr(self.models, "samplers", None)
        if names is None:
            from .generate import SAMPLERS

            return list(SAMPLERS)
        return list(names())

    def outputs(self, name: str) -> list[dict]:
        p = self.project(name)
        return [{"name": f.name, "bytes": f.stat().st_size, "modified": f.stat().st_mtime}
                for f in paths.entries(p.output, pattern="*.safetensors")]

    def output_path(self, name: str, file: str) -> Path:
        p = self.project(name)
        target = paths.child(p.output, file, "output file")
        if target.parent != p.output.resolve() or not target.is_file():
            raise UserError(f"no output file {file!r}", "list the outputs first")
        return target

    def publish_output(self, name: str, file: str) -> Path:
        """Copy one of the project's LoRA files (the save picked in the Test step's grid) to where the user
        generates: the WebUI's Lora folder, under a name no other weights use (``<lora:NAME:1>``)."""
        path = self.output_path(name, file)
        target = self.models.publish(path, path.stem, always=True)
        if target is None:
            raise UserError("there is no WebUI Lora folder here (standalone)",
                            f"the file is {path}: copy it into your WebUI's models/Lora folder")
        return target

    # ---- disk --------------------------------------------------------------------------------------
    def disk_usage(self, name: str) -> dict:
        """Bytes per category (``disk.CATEGORIES``: source, dataset, outputs, intermediate, state, caches, jobs,
        host_copies), ``total``, and a line of help per category."""
        from . import disk

        p = self.project(name)
        return {"project": name, **disk.usage(p.root, self._host_copies(name))}

    def cleanup(self, name: str, what: Optional[list] = None) -> dict:
        """Delete the categories ``what`` (None: resume state, caches and test copies, ``disk.DEFAULT_CLEANUP``).
        Final LoRA files, the dataset and the source photos go only when named. The state and latents of a
        queued or running job stay. Returns ``{"freed": {category: bytes}, "usage": disk_usage}``."""
        from . import disk

        p = self.project(name)
        what = disk.check_what(what)
        busy = [s["id"] for s in self.runner.list()
                if s["status"] in ("queued", "running") and s.get("config", {}).get("project") == name]
        if busy and set(what) - {"state", "caches", "host_copies"}:
            raise UserError(f"project {name!r} has a queued or running job", "wait for it or cancel it first")
        finals, inter = disk.output_files(p.root)
        going = (finals if "outputs" in what else []) + (inter if "intermediate" in what else [])
        # all test copies when asked; else those of the files that go (they cannot be found once it is gone)
        copies = self._host_copies(name) if "host_copies" in what else self._host_copies(name, going)
        freed = disk.clean(p.root, what, busy_jobs=busy, host_copies=copies)
        return {"freed": freed, "usage": self.disk_usage(name)}

    def _host_copies(self, name: str, files: Optional[list] = None) -> list[Path]:
        """The provider's copies outside the workspace (the WebUI's test copies) of ``files``, or of all the
        project's LoRA files."""
        find = getattr(self.models, "test_copies", None)
        if find is None:
            return []
        out = self.project(name).output
        if files is None:
            files = sorted(out.glob("*.safetensors")) if out.is_dir() else []
        files = [f for f in files if Path(f).suffix == ".safetensors"]
        return list(find(files)) if files else []

    def _remove_host_copies(self, name: str) -> None:
        from .disk import remove

        for f in self._host_copies(name):
            remove(Path(f))

    def device_kind(self) -> str:
        """Where jobs compute ("cuda", "cpu", …), asked of the provider without loading a model; the tab's
        proposed sizes depend on it (``config.device_defaults``)."""
        kind = getattr(self.models, "device_kind", None)
        if kind is not None:
            return str(kind())
        return StandaloneModels().device_kind()


def _image_exts(where: str) -> tuple:
    """Image suffixes of a project folder: what the import step takes in ``source``, the training set's in
    the dataset (which preparation writes as PNG)."""
    if where == "source":
        from .prepare.importer import SOURCE_IMAGE_EXTS

        return SOURCE_IMAGE_EXTS
    from .training.data import IMAGE_EXTS

    return IMAGE_EXTS


def _count_images(folder: Path, where: str = "dataset") -> int:
    exts = _image_exts(where)
    return sum(1 for f in paths.entries(folder) if f.suffix.lower() in exts and not f.name.endswith(".mask.png"))
