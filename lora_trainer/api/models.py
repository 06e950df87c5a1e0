"""Request and response models of the HTTP API, valid in pydantic 1 (WebUI 1.10, fastapi 0.94) and 2 (Forge 2).

The option models are generated from the config dataclasses (``TrainConfig``, ``PrepareConfig``,
``TagConfig``), so the API exposes every field with the same help text, ranges and choices as the CLI and
the tab, and a new field needs no change here. Every option is optional: what a request leaves out comes
from the project's saved config and the model's preset, then the defaults.

Only what both pydantic versions mean the same way is used: ``create_model``, ``Field``, ``conint`` /
``confloat`` / ``constr`` and ``Literal``; unknown fields are refused (``compat.strict_model_base``).
"""

import dataclasses
import math
from typing import Any, Dict, List, Literal, Optional, Tuple

from pydantic import BaseModel, Field, StrictBool, conint, constr, create_model

from ..compat import model_dump, strict_float, strict_model_base
from ..config import TrainConfig
from ..disk import CATEGORIES, CLEANABLE, DEFAULT_CLEANUP
from ..prepare.config import PrepareConfig, TagConfig
from .security import ApiError

Strict = strict_model_base()  # unknown fields refused; a body or nested object that is not a JSON object too


def Str(**kw: Any) -> Any:
    """A string field that takes JSON strings only: ``5`` is refused, not turned into ``"5"``."""
    return constr(strict=True, **kw)


# Fields holding server-side paths: confined to the server's roots before use (security.Roots).
PATH_FIELDS = {"PrepareConfig": ("face_model", "boxes", "model_path"), "TagConfig": ("model_dir",)}
MAX_TEXT = 4000


def _field_type(f: dataclasses.Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t if t in ("str", "int", "float", "bool", "list") else "str"


def _annotation(f: dataclasses.Field) -> Any:
    """The pydantic type of a config field: choices become an enum, min/max become bounds."""
    md = f.metadata
    kind = _field_type(f)
    bounds = {k: md[v] for k, v in (("ge", "min"), ("le", "max")) if v in md}
    if "choices" in md:
        return Literal[tuple(md["choices"])]
    if kind == "bool":
        return StrictBool
    if kind == "int":
        return conint(strict=True, **bounds)
    if kind == "float":
        return strict_float(**bounds)
    if kind == "list":
        return List[strict_float()] if md.get("item", "float") == "float" else List[Str(max_length=MAX_TEXT)]
    return Str(max_length=MAX_TEXT)


def options_model(cls: type, name: str, base: type = None, exclude: Tuple[str, ...] = ()) -> type:
    """A model with one optional field per dataclass field (None = not given)."""
    fields: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        desc = f"{f.metadata.get('help', '')} (default: {default!r})"
        fields[f.name] = (Optional[_annotation(f)], Field(None, description=desc))
    return create_model(name, __base__=base or Strict, **fields)


TrainOptions = options_model(TrainConfig, "TrainOptions")
PrepareOptions = options_model(PrepareConfig, "PrepareOptions")
TagOptions = options_model(TagConfig, "TagOptions")


class EstimateOptions(TrainOptions):
    """The training options the probe trains with, plus the probe's own settings."""

    probe_optimizer: Optional[Literal["DAdaptAdam", "Prodigy"]] = Field(
        None, description="adaptive optimizer the probe runs at lr 1.0 (default: DAdaptAdam)")
    probe_max_steps: Optional[conint(strict=True, ge=1, le=5000)] = Field(
        None, description="stop the probe here even if d·lr still rises (default: 600)")
    plateau_window: Optional[conint(strict=True, ge=2, le=1000)] = Field(
        None, description="steps d·lr must stay flat (default: 40)")
    plateau_epsilon: Optional[strict_float(ge=1e-6, le=1.0)] = Field(
        None, description="relative change allowed over the window (default: 0.03)")
    probe_resolution: Optional[conint(strict=True, ge=32, le=4096)] = Field(
        None, description="image size the probe trains at (default: the training resolution)")
    range_steps: Optional[conint(strict=True, ge=0, le=1000)] = Field(
        None, description="steps of the LR range test that caps the proposal (default: 60; 0 skips it)")


PROBE_FIELDS = {"probe_optimizer": "optimizer", "probe_max_steps": "max_steps", "plateau_window": "window",
                "plateau_epsilon": "epsilon", "probe_resolution": "resolution", "range_steps": "range_steps"}


def given(model: Optional[BaseModel]) -> dict:
    """The fields a request set (None = not given), with non-finite numbers refused.

    JSON has no NaN, but Python's parser accepts ``NaN`` and ``Infinity``; a NaN learning rate would pass
    every range check (comparisons with NaN are false) and ruin a run, so it is a 400 here.
    """
    if model is None:
        return {}
    data = {k: v for k, v in model_dump(model).items() if v is not None}
    bad = _non_finite(data)
    if bad:
        raise ApiError(400, f"{bad}: not a finite number", "send a finite number (JSON has no NaN or Infinity)")
    return data


def _non_finite(obj: Any, where: str = "") -> str:
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "value"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return ""


# --------------------------------------------------------------------------------------------- requests

Name = Str(min_length=1, max_length=64)
Text = Str(max_length=MAX_TEXT)


class ProjectCreate(Strict):
    name: Name = Field(..., description="ASCII letters, digits, . _ - (starts with a letter or digit)")
    trigger: Text = Field("", description="trigger word: first in every caption, the dataset folder's name")
    repeats: conint(strict=True, ge=1, le=10000) = Field(30, description="repeats per image per epoch")


class ProjectUpdate(Strict):
    trigger: Optional[Text] = None
    repeats: Optional[conint(strict=True, ge=1, le=10000)] = None


class ImportRequest(Strict):
    path: Str(min_length=1, max_length=4096) = Field(
        ..., description="a folder, image or zip on the server, inside one of its roots")


class PreprocessRequest(Strict):
    prepare: Optional[PrepareOptions] = Field(None, description="crop, background and import options")
    tag: Optional[TagOptions] = Field(None, description="auto-tag after preparing (omit: no tagging)")


class CaptionEdit(Strict):
    captions: Dict[str, List[Text]] = Field(
        ..., description="image key (as listed) -> its new tags, in order")


BULK_ACTIONS = ("add", "remove", "replace", "dedupe", "trigger", "sort")


class BulkEdit(Strict):
    action: Literal[BULK_ACTIONS] = Field(..., description="what to do to every selected caption")
    tags: List[Text] = Field([], description="add/remove: these tags; replace: the tags to replace")
    to: Text = Field("", description="replace: the new tag (empty removes them)")
    filter: Text = Field("", description="select images: '1girl AND (smile OR grin) AND NOT hat' (empty: all)")
    position: Literal["front", "back"] = Field("back", description="add: where the tags go")
    trigger: Text = Field("", description="trigger: the trigger word to put first")
    keep_tokens: conint(strict=True, ge=0, le=75) = Field(0, description="tags at the front never moved")
    by: Literal["frequency", "alpha"] = Field("frequency", description="sort: by folder frequency or name")


class SuggestionRef(Strict):
    image: Text
    tag: Text
    action: Literal["remove", "add"]


class SuggestionApply(Strict):
    suggestions: Optional[List[SuggestionRef]] = Field(
        None, description="the approved suggestions; omit to apply every remove/add suggestion (cleanup)")
    background: Optional[Text] = Field(None, description="the fill the preparation used (white, black, ...)")
    trigger: Text = Field("", description="trigger word (never removed, put first)")
    keep_tokens: Optional[conint(strict=True, ge=0, le=75)] = None
    skip_rules: List[Text] = Field([], description="rules left out when applying all (e.g. subject)")


class GenerateRequest(Strict):
    prompts: List[Text] = Field(..., description="prompts; '<lora:NAME:W>' picks output NAME.safetensors at "
                                                 "weight W when 'lora' is not given")
    lora: Optional[Str(min_length=1, max_length=255)] = Field(
        None, description="a file name from the project's outputs (omit: the base model)")
    weight: strict_float(ge=-10.0, le=10.0) = 1.0
    negative: Text = ""
    seeds: List[conint(strict=True, ge=0, le=2**32 - 1)] = Field([0], description="one image per prompt and seed")
    steps: Optional[conint(strict=True, ge=1, le=150)] = Field(
        None, description="denoising steps (omit: the model's, 20)")
    cfg_scale: Optional[strict_float(ge=0.0, le=30.0)] = Field(
        None, description="guidance scale (omit: the model's: 7 for an SD model, 3 for the toy model)")
    size: conint(strict=True, ge=0, le=2048, multiple_of=8) = Field(0, description="image side (0: the model's)")
    sampler: Optional[Str(min_length=1, max_length=64)] = Field(
        None, description="a sampler name from GET /samplers (omit: the first, the default)")


class DiskCleanupRequest(Strict):
    what: Optional[List[Literal[CLEANABLE]]] = Field(
        None, description="what to delete (omit: " + ", ".join(DEFAULT_CLEANUP) + "). Final LoRA files "
                          "(outputs), the dataset and the source photos go only when named; the state of a "
                          "queued or running job stays")


# --------------------------------------------------------------------------------------------- responses

class ErrorBody(BaseModel):
    error: str
    hint: str = ""


class Info(BaseModel):
    name: str
    version: str
    api: str
    auth: List[str]
    limits: Dict[str, Any]


class ProjectInfo(BaseModel):
    name: str
    trigger: str = ""
    repeats: int = 30
    created: Optional[float] = None
    source_images: int = 0
    dataset_images: int = 0
    outputs: List[str] = []


class Deleted(BaseModel):
    deleted: str


class ImageList(BaseModel):
    where: str
    images: List[str]


class ImportReport(BaseModel):
    copied: List[str]
    rejected: List[Dict[str, Any]]      # refused: {"file", "status", "reason"} (empty, not an image, truncated…)
    duplicates: List[Dict[str, Any]] = []  # skipped: exact duplicates of a project image or of an earlier upload
    source_images: Optional[int] = None    # the project's source images after the import


class JobRef(BaseModel):
    job: str
    status: str
    url: str


class ModelInfo(BaseModel):
    """A model a step can fetch (``models list``)."""
    id: str
    kind: str = Field(..., description="tagger or background")
    downloaded: bool
    folder: str = Field(..., description="where it is, or where a download puts it")
    size: int = Field(..., description="published size in bytes")
    on_disk: int
    licence: str
    about: str
    source: str


class JobInfo(BaseModel):
    id: str
    kind: str
    status: str
    project: Optional[str] = None
    progress: Optional[Dict[str, Any]] = None
    percent: Optional[float] = None
    eta: Optional[float] = Field(None, description="seconds left (estimated)")
    error: Optional[Dict[str, Any]] = None
    result: Optional[Dict[str, Any]] = None
    config: Dict[str, Any] = {}
    created: Optional[float] = None
    started: Optional[float] = None
    finished: Optional[float] = None
    resumable: bool = False
    url: str = ""


class JobLog(BaseModel):
    job: str
    total: int
    records: List[Dict[str, Any]]


class Cancelled(BaseModel):
    job: str
    cancelled: bool
    status: str


class FileEntry(BaseModel):
    name: str
    bytes: int
    modified: float
    url: str = ""


class FileList(BaseModel):
    files: List[FileEntry]


class Published(BaseModel):
    """Where "Use in the WebUI" put a LoRA file, and what to type in txt2img."""

    file: str = Field(..., description="the project's output file that was copied")
    path: str = Field(..., description="the copy in the WebUI's Lora folder")
    name: str = Field(..., description="its name in the Lora list (unique: other weights keep theirs)")
    prompt: str = Field(..., description="what to add to a txt2img prompt, e.g. <lora:name:1>")


class CaptionEntry(BaseModel):
    image: str
    tags: List[str]


class FreqEntry(BaseModel):
    tag: str
    count: int
    share: float


class Captions(BaseModel):
    images: List[CaptionEntry]
    frequency: List[FreqEntry]
    warnings: List[str] = []


class EditResult(BaseModel):
    changed: int
    selected: Optional[int] = None
    written: int


class Suggestion(BaseModel):
    image: str
    tag: str
    action: str
    reason: str
    rule: str


class SuggestionList(BaseModel):
    suggestions: List[Suggestion]


class CleanupResult(BaseModel):
    applied: List[Dict[str, Any]]
    flagged: List[Dict[str, Any]] = []
    written: int


class TrainConfigOut(BaseModel):
    config: Dict[str, Any]


class DiskUsage(BaseModel):
    project: str
    bytes: Dict[str, int] = Field(..., description="bytes per category: " + ", ".join(CATEGORIES))
    total: int
    help: Dict[str, str] = Field({}, description="what each category holds")


class DiskCleanupResult(BaseModel):
    freed: Dict[str, int] = Field(..., description="bytes deleted per category")
    usage: DiskUsage
