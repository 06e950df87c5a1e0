"""The venv the suite runs in is the profile it claims to be (INTERFACES.md §6, issue 11).

A suite that passes only on the newest stack ships an extension that crashes inside the WebUI, so the host
profile must really be the WebUI 1.10 venv: Python 3.10, torch 2.1.2, transformers 4.30.2, a peft that
imports there, no diffusers, and install.py must only have added to it. The standalone profile must carry
requirements/standalone.txt's pins. ``.ci/run`` names the profile in ``LORA_TRAINER_CI_PROFILE`` and the
venv folder in ``LORA_TRAINER_CI_VENV``; run by hand, the profile is detected (Python 3.10 or no diffusers
means host).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lora_trainer import install_plan as ip

REPO = Path(__file__).resolve().parents[1]


def _profile() -> str:
    named = os.environ.get("LORA_TRAINER_CI_PROFILE")
    if named:
        return named
    host = sys.version_info[:2] == (3, 10) or importlib.util.find_spec("diffusers") is None
    return "webui-1.10" if host else "standalone"


PROFILE = _profile()
host_only = pytest.mark.skipif(PROFILE != "webui-1.10", reason=f"host-profile fact; this is {PROFILE}")
standalone_only = pytest.mark.skipif(PROFILE != "standalone", reason=f"standalone fact; this is {PROFILE}")


def _pins(path: Path) -> dict[str, str]:
    """name -> pinned version of a requirements file (extras dropped: ``rembg[cpu]`` -> ``rembg``)."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s#;]+)", line.strip())
        if m:
            out[m.group(1)] = m.group(3)
    return out


def _version(name: str) -> str:
    return md.version(name)


@host_only
def test_host_profile_is_the_webui_1_10_venv():
    assert sys.version_info[:2] == (3, 10)
    assert ip.release(_version("torch")) == (2, 1, 2)
    assert _version("transformers") == "4.30.2"
    assert importlib.util.find_spec("diffusers") is None
    res = subprocess.run([sys.executable, "-c", "import diffusers"], capture_output=True, text=True)
    assert res.returncode != 0


@host_only
def test_host_profile_has_the_webui_pins():
    for name, version in _pins(REPO / "requirements" / "webui-1.10.txt").items():
        assert ip.release(_version(name)) == ip.release(version), name


@host_only
def test_host_profile_peft_fits_transformers_4_30_and_imports():
    assert not ip.older("0.13.2", _version("peft"))  # peft <= 0.13.2
    res = subprocess.run([sys.executable, "-c", "import peft; print(peft.__version__)"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == _version("peft")


@host_only
def test_host_profile_imports_what_install_py_added():
    code = ("import rembg, onnxruntime, pymatting, dadaptation, prodigyopt, bitsandbytes, pillow_heif, numpy; "
            "print(numpy.__version__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-1] == "1.26.2"  # rembg --no-deps left the host's numpy alone


def test_both_profiles_decode_phone_formats():
    """HEIC (pillow-heif: standalone pin, install.py in the WebUI) and AVIF (pillow-avif-plugin: standalone pin,
    a WebUI 1.6+ requirement), so the import tests' HEIC and AVIF files are never skipped in CI."""
    from lora_trainer.prepare.importer import extra_decoders

    assert extra_decoders() == {"heif", "avif"}


@host_only
def test_host_profile_has_exactly_one_cv2():
    assert len(ip.installed_cv2_distributions()) == 1, ip.installed_cv2_distributions()


def _ci_venv() -> Path | None:
    d = os.environ.get("LORA_TRAINER_CI_VENV")
    if d and (Path(d) / "freeze-before.txt").is_file() and (Path(d) / "freeze-after.txt").is_file():
        return Path(d)
    return None


@host_only
def test_install_py_only_added_distributions_to_the_host():
    d = _ci_venv()
    if d is None:
        pytest.skip("no freeze-before/after.txt in $LORA_TRAINER_CI_VENV (not run by .ci/run)")
    before = ip.parse_freeze((d / "freeze-before.txt").read_text())
    after = ip.parse_freeze((d / "freeze-after.txt").read_text())
    changes = ip.freeze_changes(before, after)
    assert changes["changed"] == {} and changes["removed"] == {}
    assert {"peft", "rembg", "onnxruntime", "bitsandbytes", "pillow-heif"} <= set(changes["added"])
    assert after["pillow"] == before["pillow"] == "9.5.0"  # pillow-heif took a release that fits the host's
    assert not set(changes["added"]) & ip.PROTECTED
    assert ip.release(after["peft"]) <= (0, 13, 2) and after["numpy"] == before["numpy"] == "1.26.2"
    assert "opencv-python-headless" not in after  # the WebUI's opencv-python provides cv2
    # and the test tools installed after it moved nothing the host or install.py put there
    now = {ip.normalize(x.metadata["Name"]): x.version for x in md.distributions()}
    assert {n: v for n, v in after.items() if now.get(n) != v} == {}


@standalone_only
def test_standalone_profile_has_its_pins():
    assert sys.version_info[:2] >= (3, 11)
    pins = _pins(REPO / "requirements" / "standalone.txt")
    assert {"torch", "diffusers", "transformers", "peft"} <= set(pins)
    tools = _pins(REPO / "requirements" / "test-standalone.txt")
    assert {"schemathesis", "playwright"} <= set(tools) and not set(tools) & set(pins)  # README's install: no tools
    pins.update(tools)
    wrong = {n: (v, _version(n)) for n, v in pins.items() if ip.release(_version(n)) != ip.release(v)}
    assert wrong == {}


def test_test_tools_are_installed():
    for line in (REPO / "requirements" / "test.txt").read_text().splitlines():
        name = line.split("#")[0].strip()
        if name:
            assert _version(re.split(r"[<>=!~\[ ]", name)[0])


def test_device_check_is_valid_bash_and_carries_the_standalone_pins():
    """``.ci/device-check`` (the prepared GPU run, README "Benchmark") installs wheels of what the device image
    lacks; their versions must be the standalone profile's, or the GPU figures come from another stack."""
    script = REPO / ".ci" / "device-check"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert os.access(script, os.X_OK)
    text = script.read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", (REPO / "requirements" / "standalone.txt").read_text(),
                             re.M))
    pinned = {k.split("[")[0].lower().replace("_", "-"): v for k, v in pinned.items()}
    carried = re.findall(r"([A-Za-z0-9_.\-]+)==([0-9][^\s)]*)", text[text.index("WHEELS=("):text.index("if [[")])
    assert {n.lower().replace("_", "-") for n, _ in carried} >= {"diffusers", "bitsandbytes", "dadaptation",
                                                                "prodigyopt"}
    for name, version in carried:
        key = name.lower().replace("_", "-")
        if key in pinned:
            assert version == pinned[key], f"{name}=={version} in .ci/device-check, {pinned[key]} in standalone.txt"
    from lora_trainer.toy.tokenizer import WHEEL_SPEC  # the CLIP vocabulary's wheel

    assert WHEEL_SPEC in text
