"""What install.py adds to a WebUI venv, decided by pure functions (INTERFACES.md §6, issue 11).

Our code runs on the host's packages. A careless ``pip install`` there moves numpy, adds a second OpenCV or
pulls a peft that cannot import beside the host's transformers, and the WebUI breaks for reasons the user
never sees. So the decisions live here, as data in and data out, where tests can read every one of them:
``plan(installed, python)`` takes the installed distributions and returns one ``Decision`` per package.
install.py only carries them out (always with the host's versions as pip constraints) and records what
failed in ``.install_state.json``; ``disabled_features()`` reads that file back for the tab.

Stdlib only, and nothing heavy: install.py imports this before anything else, at every WebUI start.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

PREFIX = "[LoRA Trainer]"
STATE_FILE = ".install_state.json"
STATE_VERSION = 1

INSTALL, ALREADY, SKIP, OFF = "install", "already", "skip", "off"
"""Actions: install it; it is there; not needed here; cannot be had here (its feature is switched off)."""

PROTECTED = frozenset(
    re.sub(r"[-_.]+", "-", n).lower()
    for n in (
        "torch", "torchvision", "xformers", "gradio", "fastapi", "pydantic", "transformers", "tokenizers",
        "accelerate", "safetensors", "numpy", "Pillow", "opencv-python", "protobuf", "huggingface_hub",
    )
)
"""Never installed, upgraded or downgraded by us inside a WebUI (INTERFACES.md §6)."""

CV2_PROVIDERS = (
    "opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless",
)
ONNXRUNTIME_PROVIDERS = (
    "onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-silicon", "onnxruntime-openvino",
    "onnxruntime-rocm", "onnxruntime-qnn",
)

REMBG_SPEC = "rembg==2.0.69"
"""The release the standalone profile pins and preparation is tested on (2.0.86 downloads another model)."""
REMBG_DEPS = ("jsonschema", "pooch", "pymatting", "scikit-image", "scipy", "tqdm")
"""rembg 2.0.69's own requirements, less numpy and pillow (the host's) and opencv (any provider will do)."""

PEFT_FOR_TRANSFORMERS_4 = "0.13.2"
"""peft 0.14+ fails to import with transformers 4.30.2 (`Cache`); 0.13.2 imports there and is Forge 2's pin."""
BNB_FOR_OLD_TORCH = "0.45.5"
"""bitsandbytes 0.46+ wants a newer torch (0.50 needs 2.4); 0.45.5 accepts torch >= 2.0."""

FEATURES = {
    "peft": "LoRA layers through peft",
    "bitsandbytes": "8-bit optimizers (AdamW8bit; plain AdamW is used instead)",
    "dadaptation": "DAdaptation optimizers",
    "prodigyopt": "Prodigy optimizer",
    "onnxruntime": "ONNX models (background removal, WD14 tagger)",
    "rembg": "background removal",
    "tomli": "TOML config files (JSON configs still work)",
    "pillow-heif": "HEIC/HEIF photos (iPhone)",
}
"""Feature switched off when the package it names cannot be installed; the tab shows the text."""


def normalize(name: str) -> str:
    """PEP 503 name: how pip compares distribution names (``Pillow`` == ``pillow``, ``a_b`` == ``a-b``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``2.1.2+cu121`` -> (2, 1, 2), ``0.0.23.post1`` -> (0, 0, 23)."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", version or "")
    if not m:
        return ()
    parts = [int(p) for p in m.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def older(version: str, than: str) -> bool:
    """True when ``version``'s release is below ``than`` (pre-releases count as their release)."""
    return release(version) < release(than)


@dataclass(frozen=True)
class Decision:
    """One package: what install.py does about it and why, in words the user reads at WebUI start."""

    name: str
    action: str
    spec: str = ""
    reason: str = ""
    feature: str = ""
    no_deps: bool = False
    needs: tuple[str, ...] = ()
    """Other decisions' names that must succeed first (rembg waits for its dependencies)."""

    def line(self) -> str:
        """The one line printed for this decision."""
        head = f"{PREFIX} {self.name}: "
        if self.action == INSTALL:
            pinned = self.spec.split("==", 1)[1] if "==" in self.spec else self.spec
            flags = " --no-deps" if self.no_deps else ""
            return head + f"installing {pinned}{flags}" + (f" ({self.reason})" if self.reason else "")
        if self.action == ALREADY:
            return head + f"already {self.spec}" + (f" ({self.reason})" if self.reason else "")
        off = f"; {FEATURES[self.feature]} is off" if self.action == OFF and self.feature in FEATURES else ""
        return head + f"skipped: {self.reason}{off}"

    def pip_command(self, constraints: str) -> str:
        """The argument string for ``launch.run_pip`` (which adds ``--prefer-binary`` and runs it in a shell).

        Specs are double-quoted because ``<=`` is a shell redirect; double quotes work in sh and cmd.exe.
        """
        no_deps = " --no-deps" if self.no_deps else ""
        return f'install "{self.spec}"{no_deps} -c "{constraints}"'


def cv2_providers(installed: Mapping[str, str]) -> list[str]:
    """Installed distributions among the known OpenCV wheels (each owns the ``cv2`` package)."""
    return [n for n in CV2_PROVIDERS if n in installed]


def host_key(installed: Mapping[str, str], python: Sequence[int]) -> str:
    """A short fingerprint of the venv: a pip failure is retried only once something here changed."""
    text = "py" + ".".join(map(str, python[:2])) + "\n" + "\n".join(
        f"{k}=={v}" for k, v in sorted(installed.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _norm_map(installed: Mapping[str, str]) -> dict[str, str]:
    return {normalize(k): v for k, v in installed.items()}


def _plan_peft(have: Mapping[str, str]) -> Decision:
    tf = have.get("transformers")
    if "peft" in have:
        if tf and older(tf, "4.46") and older(PEFT_FOR_TRANSFORMERS_4, have["peft"]):
            return Decision("peft", OFF, reason=(
                f"peft {have['peft']} is installed but does not import with transformers {tf} "
                f"(needs peft<={PEFT_FOR_TRANSFORMERS_4}); left as it is, another extension may need it"),
                feature="peft")
        return Decision("peft", ALREADY, have["peft"])
    if not tf:
        return Decision("peft", OFF, reason="no transformers in this venv (peft needs the host's)",
                        feature="peft")
    if older(tf, "5"):
        why = (f"transformers {tf} needs peft<={PEFT_FOR_TRANSFORMERS_4}" if older(tf, "4.46") else
               f"transformers {tf} < 5: peft {PEFT_FOR_TRANSFORMERS_4} is the release checked with 4.x "
               f"(Forge 2 pins it)")
        return Decision("peft", INSTALL, f"peft=={PEFT_FOR_TRANSFORMERS_4}", why, feature="peft")
    return Decision("peft", INSTALL, "peft", f"newest that fits transformers {tf}", feature="peft")


def _plan_bitsandbytes(have: Mapping[str, str]) -> Decision:
    if "bitsandbytes" in have:
        return Decision("bitsandbytes", ALREADY, have["bitsandbytes"])
    torch = have.get("torch")
    if not torch:
        return Decision("bitsandbytes", OFF, reason="no torch in this venv", feature="bitsandbytes")
    if older(torch, "2.0"):
        return Decision("bitsandbytes", OFF, reason=f"torch {torch} is older than 2.0",
                        feature="bitsandbytes")
    if older(torch, "2.4"):
        return Decision("bitsandbytes", INSTALL, f"bitsandbytes=={BNB_FOR_OLD_TORCH}",
                        f"torch {torch} < 2.4: newer bitsandbytes needs a newer torch", feature="bitsandbytes")
    return Decision("bitsandbytes", INSTALL, "bitsandbytes", f"newest that fits torch {torch}",
                    feature="bitsandbytes")


FLOORS = {"dadaptation": ("3.2", "3.x ships no wheel; --prefer-binary alone picks the 2.0 wheel")}
"""Lowest release worth having, where run_pip's --prefer-binary would otherwise pick an old wheel."""


def _plan_simple(have: Mapping[str, str], name: str) -> Decision:
    if name in have:
        return Decision(name, ALREADY, have[name])
    if name in FLOORS:
        floor, why = FLOORS[name]
        return Decision(name, INSTALL, f"{name}>={floor}", why, feature=name)
    return Decision(name, INSTALL, name, "newest that fits the host", feature=name)


def _plan_onnxruntime(have: Mapping[str, str]) -> Decision:
    for provider in ONNXRUNTIME_PROVIDERS:
        if provider in have:
            return Decision("onnxruntime", ALREADY, have[provider],
                            "" if provider == "onnxruntime" else f"as {provider}")
    return Decision("onnxruntime", INSTALL, "onnxruntime", "newest that fits the host's numpy and protobuf",
                    feature="onnxruntime")


def _plan_rembg(have: Mapping[str, str], python: Sequence[int], onnx: Decision,
                cv2_from: Sequence[str]) -> list[Decision]:
    if "rembg" in have:
        return [Decision("rembg", ALREADY, have["rembg"])]
    if tuple(python[:2]) < (3, 10):
        return [Decision("rembg", OFF, reason=f"{REMBG_SPEC} needs Python >= 3.10", feature="rembg")]
    if onnx.action == OFF:
        return [Decision("rembg", OFF, reason="onnxruntime is not available", feature="rembg")]
    for host_dep in ("numpy", "pillow"):
        if host_dep not in have:
            return [Decision("rembg", OFF, reason=f"the host has no {host_dep} (we never install it)",
                             feature="rembg")]
    out = []
    missing = [d for d in REMBG_DEPS if d not in have]
    cv2_dists = cv2_providers(have) or list(cv2_from)
    if not cv2_dists:
        missing.append("opencv-python-headless")
    for dep in missing:
        why = ("rembg needs cv2 and no OpenCV is installed" if dep == "opencv-python-headless"
               else "rembg needs it")
        out.append(Decision(dep, INSTALL, dep, why, feature="rembg"))
    needs = tuple(d.name for d in out) + (("onnxruntime",) if onnx.action == INSTALL else ())
    cv2_note = f", OpenCV from {cv2_dists[0]}" if cv2_dists else ""
    out.append(Decision("rembg", INSTALL, REMBG_SPEC,
                        f"its dependencies come from the host{cv2_note}", feature="rembg",
                        no_deps=True, needs=needs))
    return out


def _plan_tomli(have: Mapping[str, str], python: Sequence[int]) -> Decision:
    if tuple(python[:2]) >= (3, 11):
        return Decision("tomli", SKIP, reason=f"Python {python[0]}.{python[1]} has tomllib")
    if "tomli" in have:
        return Decision("tomli", ALREADY, have["tomli"])
    return Decision("tomli", INSTALL, "tomli", f"Python {python[0]}.{python[1]} has no tomllib",
                    feature="tomli")


def _plan_heif(have: Mapping[str, str]) -> Decision:
    if "pillow-heif" in have:
        return Decision("pillow-heif", ALREADY, have["pillow-heif"])
    if "pillow" not in have:
        return Decision("pillow-heif", OFF, reason="the host has no Pillow (we never install it)",
                        feature="pillow-heif")
    # The host's Pillow is a constraint; the bound saves pip from backtracking through every newer release
    # (0.17 wants Pillow 10.1, 1.0 wants 11.1). WebUI 1.6-1.10 pin Pillow 9.5.0: pillow-heif 0.16.
    pillow = have["pillow"]
    bound = "<0.17" if older(pillow, "10.1") else "<1" if older(pillow, "11.1") else ""
    return Decision("pillow-heif", INSTALL, f"pillow-heif{bound}", f"newest that fits the host's Pillow {pillow}",
                    feature="pillow-heif")


def plan(installed: Mapping[str, str], python: Sequence[int], importable: Iterable[str] = (),
         failed_before: Iterable[str] = (), cv2_from: Iterable[str] = ()) -> list[Decision]:
    """Every decision for a host, in the order install.py carries them out.

    ``installed``: distribution name -> version (any spelling). ``python``: ``sys.version_info``.
    ``importable``: names ``launch.is_installed`` found without metadata (counted as present).
    ``failed_before``: specs that failed on this very venv (same ``host_key``): not retried at every start.
    ``cv2_from``: distributions whose files hold ``cv2`` (``installed_cv2_distributions()``), so an OpenCV
    build with an unknown name still counts and no second one is added.
    """
    have = _norm_map(installed)
    for name in importable:
        have.setdefault(normalize(name), "(importable, version unknown)")
    onnx = _plan_onnxruntime(have)
    decisions = [_plan_peft(have), _plan_bitsandbytes(have), _plan_simple(have, "dadaptation"),
                 _plan_simple(have, "prodigyopt"), onnx, *_plan_rembg(have, python, onnx, list(cv2_from)),
                 _plan_tomli(have, python), _plan_heif(have)]
    failed = set(failed_before)
    out = []
    for d in decisions:
        if d.action == INSTALL and normalize(d.name) in PROTECTED:  # a rule above is wrong: refuse, loudly
            d = Decision(d.name, OFF, reason="the WebUI pins it; we never install it", feature=d.feature)
        elif d.action == INSTALL and d.spec in failed:
            d = Decision(d.name, OFF, d.spec, reason=(
                f"installing {d.spec} failed before on this venv; delete {STATE_FILE} to retry"),
                feature=d.feature)
        out.append(d)
    return out


def constraints_text(installed: Mapping[str, str]) -> str:
    """pip constraints pinning every installed distribution to its installed version.

    Versions pip cannot parse as PEP 440 are left out (a constraint pip rejects would fail every call).
    """
    ok = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?$")
    lines = [f"{name}=={ver}" for name, ver in sorted(installed.items(), key=lambda kv: normalize(kv[0]))
             if ok.match(ver)]
    return "\n".join(lines) + "\n"


# --- the state file: what install.py could not do, read back by the tab -------------------------------------

@dataclass
class InstallState:
    """What the last install.py run decided and which features are off because of it."""

    version: int = STATE_VERSION
    python: str = ""
    host_key: str = ""
    decisions: list = field(default_factory=list)
    failed_specs: list = field(default_factory=list)
    disabled: dict = field(default_factory=dict)
    """feature -> reason."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def default_ext_dir() -> str:
    """The extension's root folder (where install.py and the state file live)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_state(ext_dir: str | None = None) -> InstallState:
    """The last run's state, or an empty one when there is none or it cannot be read."""
    path = os.path.join(ext_dir or default_ext_dir(), STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        if raw.get("version") != STATE_VERSION:
            return InstallState()
        known = InstallState.__dataclass_fields__
        return InstallState(**{k: v for k, v in raw.items() if k in known})
    except (OSError, ValueError, TypeError):
        return InstallState()


def disabled_features(ext_dir: str | None = None) -> dict[str, str]:
    """feature id -> why it is off in this venv, e.g. ``{"rembg": "pip failed: ..."}``; empty when all is well."""
    return dict(read_state(ext_dir).disabled)


def write_state(state: InstallState, ext_dir: str | None = None) -> bool:
    """Write atomically; False (and nothing raised) when the folder is read-only."""
    path = os.path.join(ext_dir or default_ext_dir(), STATE_FILE)
    try:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(state.to_json())
        os.replace(tmp, path)
        return True
    except OSError:
        return False


# --- freeze comparison: the CI host profile's "install.py only adds" rule ------------------------------------

def parse_freeze(text: str) -> dict[str, str]:
    """``pip freeze`` output -> {normalized name: version}; ``name @ url`` lines keep the url as version."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if "==" in line:
            name, ver = line.split("==", 1)
        elif " @ " in line:
            name, ver = line.split(" @ ", 1)
        else:
            continue
        out[normalize(name.strip())] = ver.strip()
    return out


def freeze_changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, dict]:
    """{"added": {name: ver}, "removed": {name: ver}, "changed": {name: (old, new)}} between two freezes."""
    return {
        "added": {n: v for n, v in after.items() if n not in before},
        "removed": {n: v for n, v in before.items() if n not in after},
        "changed": {n: (v, after[n]) for n, v in before.items() if n in after and after[n] != v},
    }


def installed_cv2_distributions() -> list[str]:
    """Distributions in the running interpreter whose files include the ``cv2`` package (should be one).

    Reads RECORD/top_level.txt rather than trusting names, so an unknown OpenCV build is counted too.
    """
    import importlib.metadata as md

    found = []
    for dist in md.distributions():
        top = (dist.read_text("top_level.txt") or "").split()
        files = dist.files or []
        if "cv2" in top or any(str(f).replace("\\", "/").startswith("cv2/") for f in files):
            found.append(dist.metadata["Name"])
    return sorted(set(found))
