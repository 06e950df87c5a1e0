"""Configuration dataclasses: the single source of truth for CLI flags, API models, UI controls and the
``ss_*`` metadata written into each LoRA file.

Each field carries metadata: ``help`` (one line: the CLI's --help and the tab's tooltip), optional ``min``,
``max``, ``choices``, ``group`` (UI grouping) and ``ss`` (the kohya metadata key it is saved under).
Defaults reproduce the tutorial recipe (INTERFACES.md §3).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .errors import UserError

CONFIG_VERSION = 1

OPTIMIZERS = ("AdamW8bit", "AdamW", "Lion8bit", "Adafactor", "DAdaptAdam", "Prodigy")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("auto", "no", "fp16", "bf16")


def opt(default: Any, help: str, *, group: str = "training", ss: Optional[str] = None, **meta: Any):
    """A config field: default plus the metadata every front end reads."""
    md = {"help": help, "group": group, "ss": ss, **meta}
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=md)
    return field(default=default, metadata=md)


@dataclass
class TrainConfig:
    """Everything a training run needs besides the dataset and the model."""

    # --- output ---
    name: str = opt("", "Output file name (ASCII; default: the dataset folder's name part)", group="output",
                    ss="ss_output_name")
    trigger_word: str = opt("", "Word that calls the concept; put first in every caption and saved as "
                                "activation text", group="output")
    save_precision: str = opt("fp16", "Precision of the saved LoRA weights", group="output",
                              choices=("fp16", "fp32", "bf16"))
    save_fractions: list = opt([0.2, 0.4, 0.6, 0.8], "Intermediate saves at these fractions of the total "
                               "steps (for the test grid); empty for none", group="output")
    save_every_n_epochs: int = opt(0, "Also save after every N epochs (0 = off)", group="output", min=0)
    keep_last_n_saves: int = opt(0, "Keep only the newest N intermediate saves, deleting older ones (0 = keep all)",
                                 group="output", min=0)
    save_state_every_n_steps: int = opt(0, "Save the full training state every N steps for --resume (it is also "
                                           "saved at every intermediate save; 0 = only then)", group="output", min=0)
    keep_state: bool = opt(False, "Keep the resumable training state (state/ in the job folder, several times the "
                                  "LoRA's size) after the run finishes; a cancelled or failed run always keeps it "
                                  "for --resume", group="output")
    sample_every_n_steps: int = opt(0, "Generate sample images every N steps (0 = off)", group="samples", min=0)
    sample_every_n_epochs: int = opt(0, "Generate sample images every N epochs (0 = off)", group="samples", min=0)
    sample_prompts: list = opt([], "Prompts for the sample images (separate with | on the command line)",
                              group="samples", item="str")
    tensorboard: bool = opt(False, "Also write TensorBoard event files to the job folder (needs the tensorboard "
                                   "package; log.jsonl has the same numbers)", group="samples")
    # --- network ---
    network: str = opt("lora", "Network type: LoRA on attention layers, or LoCon (also the UNet's convs)",
                       group="network", choices=("lora", "locon"), ss="ss_network_module")
    rank: int = opt(128, "LoRA rank (network_dim): capacity of the LoRA", group="network", min=1, max=1024,
                    ss="ss_network_dim")
    alpha: float = opt(64.0, "LoRA alpha: output scaled by alpha/rank", group="network", min=0.0, max=1024.0,
                       ss="ss_network_alpha")
    conv_rank: int = opt(0, "LoCon rank for 3x3 convolutions (0 = same as rank when network is locon)",
                         group="network", min=0, max=1024)
    conv_alpha: float = opt(1.0, "LoCon alpha for 3x3 convolutions", group="network", min=0.0, max=1024.0)
    train_unet: bool = opt(True, "Train a LoRA on the UNet", group="network")
    train_text_encoder: bool = opt(True, "Train a LoRA on the text encoder", group="network")
    # --- optimisation ---
    unet_lr: float = opt(1e-4, "UNet learning rate (use Estimate LR to find it)", min=0.0, max=10.0,
                         ss="ss_unet_lr")
    text_encoder_lr: float = opt(0.0, "Text-encoder learning rate (0 = UNet lr x te_lr_ratio)", min=0.0,
                                 max=10.0, ss="ss_text_encoder_lr")
    te_lr_ratio: float = opt(0.1, "Text-encoder lr as a fraction of the UNet lr when not set", min=0.0, max=10.0)
    optimizer: str = opt("AdamW8bit", "Optimizer (AdamW8bit falls back to AdamW where bitsandbytes cannot load)",
                         choices=OPTIMIZERS, ss="ss_optimizer")
    weight_decay: float = opt(0.01, "Weight decay of AdamW-type optimizers", min=0.0, max=1.0)
    lr_scheduler: str = opt("constant_with_warmup", "Learning-rate schedule", choices=SCHEDULERS,
                            ss="ss_lr_scheduler")
    warmup_steps: int = opt(0, "Warm-up steps (or a ratio via warmup_ratio)", min=0, ss="ss_lr_warmup_steps")
    warmup_ratio: float = opt(0.0, "Warm-up as a fraction of total steps (overrides warmup_steps when > 0)",
                              min=0.0, max=1.0)
    lr_cycles: int = opt(1, "Restarts for cosine_with_restarts", min=1, max=100)
    lr_power: float = opt(1.0, "Power for the polynomial schedule", min=0.0, max=10.0)
    max_grad_norm: float = opt(1.0, "Clip gradients to this norm (0 = off)", min=0.0, ss="ss_max_grad_norm")
    gradient_accumulation_steps: int = opt(1, "Accumulate gradients over N batches", min=1, max=1024,
                                           ss="ss_gradient_accumulation_steps")
    # --- schedule of the run ---
    repeats: int = opt(30, "Repeats per image per epoch (a kohya folder's N_ prefix wins)", min=1, max=10000)
    epochs: int = opt(1, "Epochs", min=1, max=10000, ss="ss_num_epochs")
    max_steps: int = opt(0, "Stop after this many steps (0 = images x repeats x epochs / batch)", min=0,
                         ss="ss_max_train_steps")
    batch_size: int = opt(1, "Images per step", min=1, max=256)
    seed: int = opt(42, "Random seed", min=0, max=2**32 - 1, ss="ss_seed")
    # --- data ---
    resolution: int = opt(512, "Training resolution (square side)", group="data", min=32, max=4096,
                          ss="ss_resolution")
    enable_buckets: bool = opt(True, "Aspect-ratio buckets instead of square crops", group="data",
                               ss="ss_enable_bucket")
    bucket_no_upscale: bool = opt(True, "Never upscale an image to fill a bucket", group="data",
                                  ss="ss_bucket_no_upscale")
    bucket_step: int = opt(64, "Bucket side step in pixels", group="data", min=8, max=256)
    min_bucket_reso: int = opt(256, "Smallest bucket side", group="data", min=16, max=4096,
                               ss="ss_min_bucket_reso")
    max_bucket_reso: int = opt(1024, "Largest bucket side", group="data", min=16, max=8192,
                               ss="ss_max_bucket_reso")
    cache_latents: bool = opt(True, "Keep the latents (each image is encoded once) on the training device; off: "
                                    "in system memory, moved per step (saves GPU memory)", group="data",
                              ss="ss_cache_latents")
    cache_latents_to_disk: bool = opt(False, "Also keep the latents in the job folder, so a resumed run skips "
                                             "encoding (never written to the source folder)", group="data")
    shuffle_caption: bool = opt(False, "Shuffle caption tags each time (after keep_tokens)", group="data",
                                ss="ss_shuffle_caption")
    keep_tokens: int = opt(1, "Tags kept in place at the front when shuffling (the trigger word)", group="data",
                           min=0, max=75, ss="ss_keep_tokens")
    caption_dropout_rate: float = opt(0.0, "Chance of training an image with an empty caption", group="data",
                                      min=0.0, max=1.0, ss="ss_caption_dropout_rate")
    flip_aug: bool = opt(False, "Also train each image mirrored, half the time (off when left and right matter: "
                                "text, a side parting, a one-sided outfit)", group="data", ss="ss_flip_aug")
    clip_skip: int = opt(1, "Use the text encoder's N-th last layer (1 = last)", group="data", min=1, max=12,
                         ss="ss_clip_skip")
    # --- loss and precision ---
    noise_offset: float = opt(0.0, "Noise offset (helps very dark/bright images)", min=0.0, max=1.0,
                              ss="ss_noise_offset")
    min_snr_gamma: float = opt(0.0, "Min-SNR-gamma loss weighting (0 = off; 5 is common)", min=0.0, max=100.0,
                               ss="ss_min_snr_gamma")
    masked_loss: bool = opt(True, "Weight the loss by masks saved beside images (when present)")
    mixed_precision: str = opt("auto", "auto = fp16 on CUDA (bf16 if supported and chosen), fp32 on CPU",
                               choices=PRECISIONS, ss="ss_mixed_precision")
    gradient_checkpointing: bool = opt(False, "Trade compute for memory", ss="ss_gradient_checkpointing")
    sync_every: int = opt(5, "Read the loss on the host every N steps (NaN check, progress)", min=1, max=1000)
    compile: bool = opt(False, "torch.compile the UNet's forward (opt-in; the first steps are slow while it compiles)")

    def te_lr(self) -> float:
        return self.text_encoder_lr if self.text_encoder_lr > 0 else self.unet_lr * self.te_lr_ratio


# --------------------------------------------------------------------------------------------- validation

def field_meta(cls) -> dict[str, dict]:
    return {f.name: dict(f.metadata) for f in fields(cls)}


def _field_type(f: dataclasses.Field) -> type:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return {"str": str, "int": int, "float": float, "bool": bool, "list": list}.get(t, str)


def coerce(cls, name: str, value: Any) -> Any:
    """Convert a raw value (from a flag, TOML, JSON, a form) to the field's type, or raise UserError."""
    f = {x.name: x for x in fields(cls)}[name]
    typ = _field_type(f)
    try:
        if typ is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("1", "true", "yes", "on")
            return bool(value)
        if typ is list:
            numeric = f.metadata.get("item", "float") == "float"
            if isinstance(value, str):  # numbers: "0.2,0.4"; text items (prompts hold commas): "a|b"
                parts = value.replace(";", ",").split(",") if numeric else value.split("|")
                value = [x.strip() for x in parts if x.strip()]
            return [float(x) for x in value] if numeric else [str(x) for x in value]
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return typ(value)
    except (TypeError, ValueError):
        raise UserError(f"{name}: {value!r} is not a valid {typ.__name__}",
                        f"give a {typ.__name__}, e.g. {name}={f.default!r}") from None


def validate(cfg) -> None:
    """Check ranges and choices of every field; raises UserError naming the field and the allowed values."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        md = f.metadata
        if "choices" in md and v not in md["choices"]:
            close = difflib.get_close_matches(str(v), md["choices"], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{f.name}: {v!r} is not one of {', '.join(md['choices'])}", hint + "pick one of those")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if "min" in md and v < md["min"]:
                raise UserError(f"{f.name}: {v} is below the minimum {md['min']}", f"use {md['min']} or more")
            if "max" in md and v > md["max"]:
                raise UserError(f"{f.name}: {v} is above the maximum {md['max']}", f"use {md['max']} or less")
    if isinstance(cfg, TrainConfig):
        if cfg.name and sanitize_name(cfg.name) != cfg.name:
            raise UserError(f"name: {cfg.name!r} is not a safe file name (ASCII letters, digits, - _ . only)",
                            f"use {sanitize_name(cfg.name)!r}")
        if cfg.min_bucket_reso > cfg.max_bucket_reso:
            raise UserError("min_bucket_reso is larger than max_bucket_reso", "swap them")
        if not cfg.train_unet and not cfg.train_text_encoder:
            raise UserError("nothing to train: train_unet and train_text_encoder are both off", "turn one on")
        if any(not 0 < x < 1 for x in cfg.save_fractions):
            raise UserError("save_fractions must lie strictly between 0 and 1", "e.g. 0.2,0.4,0.6,0.8")


def sanitize_name(name: str) -> str:
    """A file-name-safe ASCII version of ``name`` (accents folded, other characters to ``_``)."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", folded).strip("._-")
    return safe or "lora"


# --------------------------------------------------------------------------------------------- files

MIGRATIONS: dict[int, Any] = {
    # version N -> function(dict) -> dict at version N+1. Small and pure; none yet.
}


def migrate(data: dict) -> dict:
    version = int(data.pop("version", CONFIG_VERSION))
    if version > CONFIG_VERSION:
        raise UserError(f"config version {version} is newer than this LoRA Trainer understands ({CONFIG_VERSION})",
                        "update LoRA Trainer")
    while version < CONFIG_VERSION:
        data = MIGRATIONS[version](dict(data))
        version += 1
    return data


def from_dict(cls, data: dict, *, strict: bool = True):
    """Build a config from a dict (TOML/JSON/API); unknown keys are an error with a suggestion."""
    data = migrate(dict(data))
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in names:
            if not strict:
                continue
            close = difflib.get_close_matches(k, names, n=1)
            raise UserError(f"unknown option {key!r}", f"did you mean {close[0]!r}?" if close else
                            "see --help for the options")
        kwargs[k] = coerce(cls, k, value)
    cfg = cls(**kwargs)
    validate(cfg)
    return cfg


def to_dict(cfg) -> dict:
    return {"version": CONFIG_VERSION, **dataclasses.asdict(cfg)}


def load_file(path: str | Path) -> dict:
    """Read a TOML or JSON config file into a dict (``tomllib`` on 3.11+, ``tomli`` on 3.10)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}", "check the path given to --config")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            import tomli as tomllib
        data = tomllib.loads(text)
        return data.get("train", data) if isinstance(data.get("train"), dict) else data
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's to fix
        raise UserError(f"cannot parse {p.name}: {exc}", "fix the file's syntax (TOML or JSON)") from None


def dump_toml(data: dict) -> str:
    """A minimal TOML writer for flat config dicts (str, int, float, bool, list of numbers)."""
    lines = []
    for k, v in data.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            lines.append(f"{k} = {v!r}")
        elif isinstance(v, list):
            lines.append(f"{k} = [{', '.join(repr(x) for x in v)}]")
        else:
            lines.append(f"{k} = {json.dumps(str(v), ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- presets

# The recipe scaled to the embedded toy model (INTERFACES.md §4). The unet lr is the toy LR sweep's best
# (python -m lora_trainer.bench --only lr-sweep, 2026-12-03, on the shipped toy model; the ring found with the
# LoRA, share of the 64 test generations, mean over training seeds 42/43/44): 2.5e-4 0.01 · 5e-4 0.09 ·
# 1e-3 0.56 · 2e-3 0.80 · 4e-3 0.89 (0.84/0.97/0.86) · 8e-3 0.83 (0.61/0.92/0.95) · 1.6e-2 0.00 (broken) ·
# 3.2e-2 0.00. The 2026-12-02 sweep, one seed each, had picked 8e-3 (0.86 on that machine): its seed-42
# LoRA gives 0.61 on another CPU, so the sweep now averages three trainings.
TOY_PRESET: dict = {
    "resolution": 64, "min_bucket_reso": 32, "max_bucket_reso": 128, "bucket_step": 8,
    "rank": 8, "alpha": 4.0, "repeats": 10, "epochs": 2, "batch_size": 4,
    "unet_lr": 4e-3,  # the toy LR sweep's best (above)
    "te_lr_ratio": 0.1, "optimizer": "AdamW8bit",
}


def toy_config(**overrides) -> TrainConfig:
    return from_dict(TrainConfig, {**TOY_PRESET, **overrides})


# What the tab proposes on a CPU for a full-size model (native side >= CPU_SHRINK_FROM): a run and a test that
# end in minutes, not hours. The toy preset is already sized for a CPU and is left as it is.
CPU_SHRINK_FROM = 256
CPU_MAX_RANK = 32
CPU_TEST_STEPS = 12


def device_defaults(preset: Optional[dict], device: str) -> dict:
    """The sizes the tab proposes for this model (its ``preset``: None = the recipe) on ``device`` ("cuda",
    "cpu", "mps", …): ``{"train": TrainConfig overrides, "test": {"size", "steps", "seeds"}}``.

    On a GPU: the model's own values (``train`` empty), tests at its native side, 20 steps, seeds 1 and 2.
    On a CPU, for a full-size model: rank at most ``CPU_MAX_RANK`` (alpha scaled with it, so alpha/rank and the
    learning rate mean the same), resolution 3/4 of the native side on the 64-pixel grid (512 → 384), and one
    test image per file at that size with ``CPU_TEST_STEPS`` steps. A saved project config wins over all this.
    """
    base = TrainConfig()
    preset = dict(preset or {})
    native = int(preset.get("resolution", base.resolution))
    rank = int(preset.get("rank", base.rank))
    alpha = float(preset.get("alpha", base.alpha))
    test = {"size": native, "steps": 20, "seeds": [1, 2]}
    if str(device).split(":")[0] != "cpu" or native < CPU_SHRINK_FROM:
        return {"train": {}, "test": test}
    small_rank = min(rank, CPU_MAX_RANK)
    res = max(CPU_SHRINK_FROM, native * 3 // 4 // 64 * 64)
    train = {"rank": small_rank, "alpha": alpha * small_rank / rank, "resolution": res}
    return {"train": train, "test": {"size": res, "steps": CPU_TEST_STEPS, "seeds": [1]}}


# How test images are drawn when the user does not say (the CLI's generate, the tab's Test step, the API):
# a user's SD model at the WebUI's usual 20 steps and CFG 7; the toy model at CFG 3, where it draws best
# (toy/model.py: base quality 0.984 at CFG 3, 0.945 at 5; the ring LoRA 91 % at CFG 3, 66 % at 5), and
# which the demo and the toy's judges use. ``sampler`` None: the generator's own default (the first).
DEFAULT_SAMPLING: dict = {"steps": 20, "cfg_scale": 7.0, "sampler": None}
TOY_SAMPLING: dict = {"steps": 20, "cfg_scale": 3.0, "sampler": "Euler"}


def markdown_table(cls) -> str:
    """The options of ``cls`` as a Markdown table (README; a test keeps the README in step with the code)."""
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = f"`{default}`" if default not in ("", []) else "—"
        rows.append(f"| `{f.name}` | {shown} | {f.metadata['help']} |")
    return "\n".join(rows)
