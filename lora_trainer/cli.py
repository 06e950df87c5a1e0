"""``python -m lora_trainer <command>``: the standalone face over the core (INTERFACES.md §1).

Flags are generated from the config dataclasses, so ``--help`` shows the same one-line help as the tab's
tooltips. Exit codes: 0 success, 2 bad input (one line on stderr), 130 cancelled (Ctrl-C saves what it
has), 1 anything else (traceback in the log file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import __version__
from .config import TrainConfig, field_meta, from_dict, load_file
from .errors import UserError

log = logging.getLogger("lora_trainer")
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
# name -> (help, add_arguments, run); filled at the bottom and by the issues that add commands.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def add_config_flags(p: argparse.ArgumentParser, cls, skip: Sequence[str] = ()) -> None:
    """One flag per dataclass field, help and choices from the field metadata; default None = not given."""
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        md = f.metadata
        g = groups.setdefault(md.get("group", "options"), p.add_argument_group(md.get("group", "options")))
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{md.get('help', '')} (default: {default})".replace("%", "%%")  # argparse formats help
        if isinstance(default, bool):
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            g.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper() if "choices" not in md else None,
                           choices=md.get("choices"), help=help_text)


def config_from_args(cls, args: argparse.Namespace, base: Optional[dict] = None):
    """Defaults < preset ``base`` < ``--config`` file < flags."""
    data: dict = dict(base or {})
    if getattr(args, "config", None):
        data.update(load_file(args.config))
    for name in field_meta(cls):
        v = getattr(args, name, None)
        if v is not None:
            data[name] = v
    return from_dict(cls, data)


def _device(spec: str):
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def _setup_logging(log_file: Optional[Path]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        h = logging.FileHandler(log_file, encoding="utf-8")
        h.setLevel(logging.DEBUG)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(h)
        log.setLevel(logging.INFO)


# Third-party warnings that say nothing to our users, each named by the logger that emits it. Set here, in the
# CLI's entry only: inside the WebUI our code leaves the host's logging as the WebUI configured it.
QUIET_LOGGERS = (
    # bitsandbytes >= 0.48 on an AVX512-BF16 CPU, at import: its 4-bit CPU kernels need the `kernels`
    # package. We use only its 8-bit optimizers, which do not.
    "bitsandbytes.backends.cpu.ops",
    # transformers 5 (logger.warning_once) when diffusers touches CLIPImageProcessor without torchvision:
    # it falls back to the PIL processor. No image processor of ours is ever used (no safety checker).
    "transformers.utils.import_utils",
)


def quiet_third_party() -> None:
    """Raise the known noisy loggers to ERROR, so every command's first line is ours."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file of options; flags override it")
    p.add_argument("--base-model", metavar="PATH", default=None,
                   help="diffusers folder or .safetensors checkpoint, or a hub repository id (owner/name, diffusers "
                        "layout) or .safetensors URL, downloaded once into the cache (default: the embedded toy model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")


# --------------------------------------------------------------------------------------------- train

def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help="kohya train folder (N_name subfolders) or a folder of images "
                                                 "with captions (default: the toy world's demo set)")
    p.add_argument("--output-dir", metavar="DIR", help="where the LoRA files go (default: ./lora_trainer_output/<name>)")
    p.add_argument("--resume", metavar="JOB_DIR", help="continue an interrupted run from its job folder")
    p.add_argument("--no-forecast", action="store_true",
                   help="skip the forecast (a few measured warm-up steps: minutes and peak memory) before training")
    _common(p)
    add_config_flags(p, TrainConfig)


def _train(args: argparse.Namespace) -> int:
    from .models import load_backend, preset_for
    from .training.data import scan_dataset
    from .training.loop import forecast

    job_id = None
    if args.resume:
        job_dir = Path(args.resume)
        saved = _saved_job(job_dir)
        cfg = from_dict(TrainConfig, saved["train"])
        data, base_model, out = Path(saved["data"]), saved.get("base_model"), Path(saved["output_dir"])
        job_id = job_dir.name
    else:
        base_model = args.base_model
        cfg = config_from_args(TrainConfig, args, preset_for(base_model))  # bad options fail before any loading
        data, cfg, out = data_and_output(args, cfg)
    scan = scan_dataset(data, cfg.repeats)
    backend, _ = load_backend(base_model, _device(args.device))
    fc = forecast(cfg, scan.num_samples)
    uncapped = forecast(dataclasses.replace(cfg, max_steps=0), scan.num_samples)["steps"]
    reps = {it.repeats for it in scan.items}
    reps_text = f"{reps.pop()} repeats" if len(reps) == 1 else "their folders' repeats"
    capped = f", capped at max_steps {fc['steps']}" if fc["steps"] < uncapped else ""
    print(f"{scan.num_images} images × {reps_text} × {cfg.epochs} epochs ÷ batch {cfg.batch_size} = {uncapped} "
          f"steps{capped} on {backend.name} ({backend.device.type})", file=sys.stderr)
    if not args.resume and not args.no_forecast:
        from .training.forecast import forecast_run, format_forecast

        print(f"forecast: {format_forecast(forecast_run(backend, scan, cfg))}", file=sys.stderr)
    if scan.missing_captions:
        print(f"warning: {len(scan.missing_captions)} images have no caption (.txt/.caption), e.g. "
              f"{scan.missing_captions[0].name}: they train on the folder name", file=sys.stderr)
    if scan.left_out:
        from .training.data import left_out_text

        print(f"warning: {left_out_text(scan.left_out)} left out: run `prepare` on them first (it writes PNG)",
              file=sys.stderr)
    job_config = {"train": dataclasses.asdict(cfg), "data": str(data.resolve()), "base_model": base_model,
                  "output_dir": str(out.resolve())}
    return run_job(out, "train", job_config,
                   lambda ctx: _train_job(ctx, backend, scan, cfg, out, resume=job_id is not None), job_id=job_id)


def data_and_output(args: argparse.Namespace, cfg: TrainConfig) -> tuple[Path, TrainConfig, Path]:
    """``--data`` (default: the demo set), the config named after the dataset when no ``--name`` was given
    (the first kohya folder's name part, else the folder's name), and ``--output-dir`` (default:
    ``./lora_trainer_output/<name>``): what ``train`` and ``estimate`` share (INTERFACES §1)."""
    from .models import default_dataset
    from .training.data import parse_kohya_dirname

    data = Path(args.data) if args.data else default_dataset()
    if not cfg.name:
        first = next((d for d in sorted(data.iterdir()) if d.is_dir() and parse_kohya_dirname(d.name)), None) \
            if data.is_dir() else None
        cfg = dataclasses.replace(cfg, name=_safe_name(parse_kohya_dirname(first.name)[1] if first else data.name))
    out = Path(args.output_dir) if args.output_dir else Path("lora_trainer_output") / cfg.name
    return data, cfg, out


def _saved_job(job_dir: Path) -> dict:
    state_file = job_dir / "state.json"
    if not state_file.is_file():
        raise UserError(f"{job_dir} is not a job folder (no state.json)", "give --resume OUT/jobs/<job-id>")
    saved = json.loads(state_file.read_text(encoding="utf-8"))
    if saved.get("kind") != "train" or "train" not in (saved.get("config") or {}):
        raise UserError(f"{job_dir} is not a training job", "give --resume the folder of a train job")
    return saved["config"]


def _safe_name(name: str) -> str:
    from .config import sanitize_name

    return sanitize_name(name)


def _train_job(ctx, backend, scan, cfg, out: Path, resume: bool = False) -> dict:
    from .generate import DiffusersGenerator
    from .training.loop import Callbacks, Trainer

    bar = _Bar()
    cb = Callbacks(on_progress=lambda p: (ctx.progress(p), bar.update(p)), on_log=ctx.log)
    try:
        res = Trainer(backend, scan, cfg, out, cb, ctx.should_stop, ctx.job_dir, cfg.name, resume=resume,
                      generator=DiffusersGenerator(backend)).run()  # used only if the config asks for samples
    finally:
        bar.close()
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return {"output": str(res.output) if res.output else None, "saved": [str(s) for s in res.saved],
            "steps": res.steps, "total_steps": res.total_steps, "loss": res.final_loss, "cancelled": res.cancelled,
            "seconds": res.seconds, "optimizer": res.optimizer}


LINES_PER_PHASE = 20  # without a terminal: about this many progress lines per phase


class _Bar:
    """tqdm progress on stderr, one bar per phase; when stderr is no terminal (a pipe, a log file, CI),
    where a bar never draws, one plain line per ``total // LINES_PER_PHASE`` steps and the last."""

    def __init__(self, stream=None):
        self.bar = None
        self.phase = None
        self.stream = stream or sys.stderr
        self.lines = not _isatty(self.stream)

    def update(self, p) -> None:
        if self.lines:
            self._line(p)
            return
        from tqdm import tqdm

        if p.phase != self.phase:
            self.close()
            self.phase = p.phase
            self.bar = tqdm(total=p.total, desc="caching latents" if p.phase == "cache" else p.phase,
                            unit="img" if p.phase == "cache" else "step", file=sys.stderr, leave=True,
                            disable=None)
        self.bar.n = p.step
        if p.loss == p.loss:  # not NaN
            self.bar.set_postfix(loss=f"{p.loss:.4f}", lr=f"{p.lr:.2e}", refresh=False)
        self.bar.refresh()

    def _line(self, p) -> None:
        # The run reports progress at most a few times a second, so it may skip steps: a line is due when
        # the step enters a new block of ``every`` steps, or is the last; each step is said once.
        every = max(1, p.total // LINES_PER_PHASE)
        last_phase, last_step = self.phase or (None, 0)
        if p.phase != last_phase:
            last_step = 0
        if p.step <= last_step or (p.step // every == last_step // every and p.step != p.total):
            return
        self.phase = (p.phase, p.step)
        what = "caching latents" if p.phase == "cache" else p.phase
        tail = f" loss {p.loss:.4f} lr {p.lr:.2e}" if p.phase != "cache" and p.loss == p.loss else ""
        eta = f" eta {p.eta:.0f} s" if p.eta and p.eta == p.eta and p.step < p.total else ""
        print(f"{what} {p.step}/{p.total}{tail}{eta}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def run_job(out: Path, kind: str, config: dict, fn, job_id: Optional[str] = None) -> int:
    """Run one job through a JobRunner in ``out/jobs``; Ctrl-C cancels it (it saves what it has).
    ``job_id`` of an existing job continues in its folder (resume)."""
    from .jobs import CANCELLED, FAILED, JobRunner

    runner = JobRunner(out / "jobs")
    job = runner.submit(kind, fn, config=config, job_id=job_id)
    try:
        while True:
            try:
                state = runner.wait(job, timeout=0.5)
                break
            except TimeoutError:
                continue
    except KeyboardInterrupt:
        print("\ncancelling: saving what the run has…", file=sys.stderr)
        runner.cancel(job)
        state = runner.wait(job)
    runner.shutdown(cancel_running=False)
    if state["status"] == FAILED:
        err = state["error"] or {}
        if err.get("kind") == "user":
            raise UserError(err.get("message", "the job failed"), err.get("hint", ""))
        raise RuntimeError(f"{err.get('message', 'the job failed')} — {err.get('hint', '')}")
    result = state.get("result") or {}
    print(json.dumps({"status": state["status"], "job": str(runner.job_dir(job)), **result}, ensure_ascii=False))
    return EXIT_CANCELLED if state["status"] == CANCELLED else EXIT_OK


# --------------------------------------------------------------------------------------------- generate

def _gen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", metavar="FILE", help="LoRA .safetensors to apply (omit for the base model)")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("--output", required=True, metavar="PNG", help="image file to write")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (default: the model's; 20 for the toy model and for SD models)")
    p.add_argument("--cfg-scale", type=float, default=None,
                   help="classifier-free guidance scale (default: the model's; 3 for the toy model, 7 for SD models)")
    p.add_argument("--weight", type=float, default=1.0, help="LoRA weight (default 1.0)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: the model's)")
    p.add_argument("--sampler", default=None,
                   help="sampler by its WebUI name: Euler (default), Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, UniPC")
    _common(p)


def _generate(args: argparse.Namespace) -> int:
    from .generate import DiffusersGenerator
    from .models import load_backend, sampling_for

    backend, preset = load_backend(args.base_model, _device(args.device))
    size = args.size or int((preset or {}).get("resolution", 512))
    sampling = sampling_for(args.base_model)  # what the user left out: the model's own settings
    steps = args.steps if args.steps is not None else sampling["steps"]
    cfg_scale = args.cfg_scale if args.cfg_scale is not None else sampling["cfg_scale"]
    gen = DiffusersGenerator(backend)
    img = gen.generate([args.prompt], negative=args.negative, seeds=[args.seed], steps=steps,
                       cfg_scale=cfg_scale, size=size, lora=args.lora, weight=args.weight,
                       sampler=args.sampler or sampling["sampler"])[0]
    from .workspace import atomic_path

    out = Path(args.output)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    print(json.dumps({"output": str(out), "size": list(img.size), "steps": steps, "cfg_scale": cfg_scale,
                      "sampler": args.sampler or sampling["sampler"] or gen.sampler_name}))
    return EXIT_OK


# --------------------------------------------------------------------------------------------- main

COMMANDS["train"] = ("train a LoRA; writes OUT/<name>.safetensors and per-save files", _train_args, _train)
COMMANDS["generate"] = ("txt2img with a LoRA applied", _gen_args, _generate)
COMMANDS["demo"] = ("teach the embedded toy model a new shape with a LoRA; before/after grid and DIR/demo.json", lambda p: __import__("lora_trainer.toy.demo", fromlist=["x"]).add_args(p), lambda a: __import__("lora_trainer.toy.demo", fromlist=["x"]).run(a))

# Each step's package adds its own commands: a module here defines ``register(commands: dict)``, which adds
# ``name -> (help, add_arguments, run)`` entries. Importing them must stay cheap (no torch at import).
COMMAND_MODULES = (
    "lora_trainer.toy.demo",
    "lora_trainer.prepare.cli",
    "lora_trainer.tags.cli",
    "lora_trainer.training.estimate",
    "lora_trainer.api.serve",
    "lora_trainer.ui.standalone",
    "lora_trainer.models_cli",
)


def _register_all() -> None:
    import importlib
    import importlib.util

    for mod in COMMAND_MODULES:
        try:
            found = importlib.util.find_spec(mod) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            register = getattr(importlib.import_module(mod), "register", None)
            if register is not None:
                register(COMMANDS)



class _Parser(argparse.ArgumentParser):
    """argparse's usage errors as the project's one line on stderr (exit 2), not usage text plus a line.
    Subcommand parsers inherit the class (argparse builds them with ``type(parent)``)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} — see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    _register_all()
    p = _Parser(prog="python -m lora_trainer",
                description="LoRA Trainer: a folder of photos to a working LoRA.")
    p.add_argument("--version", action="version", version=f"LoRA Trainer {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _run) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_args(sp)
    return p


# Folders a command reads or writes, by argparse name. A command works inside the folder it was given: a
# symbolic link under it leading out (a photo, a jobs/ folder) is refused before anything runs (exit 2).
PATH_ARGS = {"data": "--data", "input": "--input", "output_dir": "--output-dir"}


def check_path_args(args: argparse.Namespace) -> None:
    from . import paths

    for attr, flag in PATH_ARGS.items():
        value = getattr(args, attr, None)
        if isinstance(value, str) and value and Path(value).is_dir():
            paths.check_tree(Path(value), flag)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    log_file = Path(os.environ.get("LORA_TRAINER_LOG") or Path(tempfile.gettempdir()) / "lora_trainer.log")
    _setup_logging(log_file)
    quiet_third_party()
    try:
        check_path_args(args)
        from .model_files import check_model_args

        check_model_args(args)  # --base-model / --lora files: a bad one is named before any model loads
        return COMMANDS[args.command][2](args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001
        log.error("%s", traceback.format_exc())
        print(f"error: {type(exc).__name__}: {exc} (traceback in {log_file})", file=sys.stderr)
        return EXIT_ERROR
