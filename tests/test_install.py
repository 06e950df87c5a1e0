"""install.py and its decisions (issue 11): what it adds to WebUI 1.6, WebUI 1.10 and Forge 2 venvs.

The host sets are the versions those WebUIs pin (their requirements_versions.txt and torch commands) plus the
transitive distributions their pins pull in that matter here (OpenCV through facexlib, scipy through
scikit-image, jsonschema through jsonmerge). install.py runs against a stand-in ``launch`` that records
every pip command and the constraints file it was given.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lora_trainer import install_plan as ip

REPO = Path(__file__).resolve().parents[1]


def _pins(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s#]+)", text, re.M)}


WEBUI_16 = {  # v1.6.0 requirements_versions.txt, torch 2.0.1+cu118 from its TORCH_COMMAND
    **_pins("""
GitPython==3.1.32
Pillow==9.5.0
accelerate==0.21.0
basicsr==1.4.2
blendmodes==2022
clean-fid==0.1.35
einops==0.4.1
fastapi==0.94.0
gfpgan==1.3.8
gradio==3.41.2
httpcore==0.15
inflection==0.5.1
jsonmerge==1.8.0
kornia==0.6.7
lark==1.1.2
numpy==1.23.5
omegaconf==2.2.3
open-clip-torch==2.20.0
piexif==1.1.3
psutil==5.9.5
pytorch_lightning==1.9.4
realesrgan==0.3.0
resize-right==0.0.2
safetensors==0.3.1
scikit-image==0.21.0
timm==0.9.2
tomesd==0.1.3
torchdiffeq==0.2.3
torchsde==0.2.5
transformers==4.30.2
"""),
    "torch": "2.0.1+cu118", "torchvision": "0.15.2+cu118", "xformers": "0.0.20",
    "opencv-python": "4.8.0.76", "scipy": "1.11.2", "jsonschema": "4.19.0", "tqdm": "4.66.1",
    "tokenizers": "0.13.3", "huggingface-hub": "0.16.4", "protobuf": "3.20.3", "pydantic": "1.10.12",
    "setuptools": "65.5.0", "pip": "23.0.1",
}

WEBUI_110 = {  # requirements/webui-1.10.txt (the CI host profile) and what its pins pull in
    **_pins((REPO / "requirements" / "webui-1.10.txt").read_text()),
    "torch": "2.1.2", "opencv-python": "4.11.0.86", "scipy": "1.15.3", "jsonschema": "4.26.0",
    "tqdm": "4.70.1", "numba": "0.68.1", "tokenizers": "0.13.3", "huggingface-hub": "0.36.2",
    "pydantic": "1.10.27", "pip": "23.0.1",
}

FORGE_2 = {  # Forge 2 (main, gradio 4) requirements_versions.txt, torch 2.3.1+cu121
    "setuptools": "69.5.1", "GitPython": "3.1.32", "Pillow": "9.5.0", "accelerate": "0.21.0",
    "blendmodes": "2022", "clean-fid": "0.1.35", "diskcache": "5.6.3", "einops": "0.4.1", "facexlib": "0.3.0",
    "fastapi": "0.104.1", "gradio": "4.40.0", "httpcore": "0.15", "inflection": "0.5.1", "jsonmerge": "1.8.0",
    "kornia": "0.6.7", "lark": "1.1.2", "numpy": "1.26.2", "omegaconf": "2.2.3", "open-clip-torch": "2.20.0",
    "piexif": "1.1.3", "protobuf": "3.20.0", "psutil": "5.9.5", "pytorch_lightning": "1.9.4",
    "resize-right": "0.0.2", "safetensors": "0.4.2", "scikit-image": "0.21.0", "spandrel": "0.3.4",
    "tomesd": "0.1.3", "torchdiffeq": "0.2.3", "torchsde": "0.2.6", "transformers": "4.46.1",
    "httpx": "0.24.1", "diffusers": "0.31.0", "tqdm": "4.66.1", "peft": "0.13.2", "pydantic": "2.8.2",
    "huggingface-hub": "0.26.2", "torch": "2.3.1+cu121", "torchvision": "0.18.1+cu121", "xformers": "0.0.27",
    "opencv-python": "4.10.0.84", "scipy": "1.14.1", "jsonschema": "4.23.0", "tokenizers": "0.20.3",
}

HOSTS = {"webui-1.6": WEBUI_16, "webui-1.10": WEBUI_110, "forge-2": FORGE_2}
PY310 = (3, 10)


def by_name(decisions):
    out = {d.name: d for d in decisions}
    assert len(out) == len(decisions), "one decision per package"
    return out


# --- decisions per host -------------------------------------------------------------------------------------

def test_webui_110_gets_exactly_the_missing_packages_at_versions_that_fit():
    d = by_name(ip.plan(WEBUI_110, PY310))
    installs = {n: x.spec for n, x in d.items() if x.action == ip.INSTALL}
    assert installs == {
        "peft": "peft==0.13.2", "bitsandbytes": "bitsandbytes==0.45.5", "dadaptation": "dadaptation>=3.2",
        "prodigyopt": "prodigyopt", "onnxruntime": "onnxruntime", "pooch": "pooch", "pymatting": "pymatting",
        "rembg": "rembg==2.0.69", "tomli": "tomli", "pillow-heif": "pillow-heif<0.17",
    }
    assert "4.30.2" in d["peft"].reason and "2.1.2" in d["bitsandbytes"].reason
    assert "Pillow 9.5.0" in d["pillow-heif"].reason  # the host's Pillow, a constraint: never moved
    newer = {**WEBUI_110, "Pillow": "10.4.0"}
    assert by_name(ip.plan(newer, PY310))["pillow-heif"].spec == "pillow-heif<1"
    assert by_name(ip.plan({**WEBUI_110, "Pillow": "11.3.0"}, PY310))["pillow-heif"].spec == "pillow-heif"
    assert by_name(ip.plan({**WEBUI_110, "pillow_heif": "0.16.0"}, PY310))["pillow-heif"].action == ip.ALREADY
    assert d["rembg"].no_deps and not any(x.no_deps for n, x in d.items() if n != "rembg")
    assert set(d["rembg"].needs) == {"pooch", "pymatting", "onnxruntime"}
    assert "opencv-python-headless" not in d  # the host's opencv-python provides cv2


def test_webui_16_gets_peft_0_13_2_and_bitsandbytes_0_45_5():
    d = by_name(ip.plan(WEBUI_16, PY310))
    assert d["peft"].spec == "peft==0.13.2"
    assert d["bitsandbytes"].spec == "bitsandbytes==0.45.5" and "2.0.1+cu118" in d["bitsandbytes"].reason
    assert d["rembg"].action == ip.INSTALL and d["rembg"].no_deps
    assert {n for n, x in d.items() if x.action == ip.INSTALL} >= {"pooch", "pymatting"}
    assert "opencv-python-headless" not in d and "numpy" not in d and "scipy" not in d


def test_forge_2_keeps_its_peft_and_gets_the_old_bitsandbytes_for_torch_2_3():
    d = by_name(ip.plan(FORGE_2, PY310))
    assert d["peft"].action == ip.ALREADY and d["peft"].spec == "0.13.2"
    assert d["peft"].line() == "[LoRA Trainer] peft: already 0.13.2"
    assert d["bitsandbytes"].spec == "bitsandbytes==0.45.5"  # torch 2.3.1 < 2.4
    assert d["rembg"].action == ip.INSTALL


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_never_installs_anything_the_host_has_or_pins(host):
    installed = HOSTS[host]
    have = {ip.normalize(n) for n in installed}
    for d in ip.plan(installed, PY310):
        line = d.line()
        assert line.startswith("[LoRA Trainer] ") and "\n" not in line
        if d.action == ip.INSTALL:
            name = ip.normalize(re.split(r"[=<>!~\[ ]", d.spec)[0])
            assert name == ip.normalize(d.name)
            assert name not in ip.PROTECTED, d
            assert name not in have, f"{host}: {d.spec} is already installed"
            assert d.feature in ip.FEATURES


def test_lines_say_what_and_why():
    d = by_name(ip.plan(WEBUI_110, PY310))
    assert d["peft"].line() == ("[LoRA Trainer] peft: installing 0.13.2 "
                                "(transformers 4.30.2 needs peft<=0.13.2)")
    assert d["rembg"].line().startswith("[LoRA Trainer] rembg: installing 2.0.69 --no-deps")
    assert by_name(ip.plan(WEBUI_110, (3, 11)))["tomli"].line() == (
        "[LoRA Trainer] tomli: skipped: Python 3.11 has tomllib")


# --- single rules -----------------------------------------------------------------------------------------

def test_newer_torch_and_transformers_get_the_newest_fitting_release():
    host = {**WEBUI_110, "torch": "2.6.0+cu124", "transformers": "5.23.0"}
    d = by_name(ip.plan(host, (3, 11)))
    assert d["bitsandbytes"].spec == "bitsandbytes" and d["peft"].spec == "peft"


def test_transformers_4_46_gets_the_peft_forge_2_pins():
    host = {k: v for k, v in FORGE_2.items() if k != "peft"}
    d = by_name(ip.plan(host, PY310))
    assert d["peft"].spec == "peft==0.13.2" and "4.46.1" in d["peft"].reason


def test_a_peft_too_new_for_the_hosts_transformers_is_left_alone_and_its_feature_is_off():
    d = by_name(ip.plan({**WEBUI_110, "peft": "0.15.0"}, PY310))
    assert d["peft"].action == ip.OFF and d["peft"].feature == "peft"
    assert "0.15.0" in d["peft"].reason and "4.30.2" in d["peft"].reason
    assert "is off" in d["peft"].line()


def test_no_opencv_at_all_adds_the_headless_one_before_rembg():
    host = {k: v for k, v in WEBUI_110.items() if k != "opencv-python"}
    decisions = ip.plan(host, PY310)
    names = [d.name for d in decisions]
    assert names.index("opencv-python-headless") < names.index("rembg")
    assert "opencv-python-headless" in by_name(decisions)["rembg"].needs


def test_an_opencv_build_with_an_unknown_name_counts_through_its_files():
    host = {k: v for k, v in WEBUI_110.items() if k != "opencv-python"}
    d = by_name(ip.plan(host, PY310, cv2_from=["opencv-python-rolling"]))
    assert "opencv-python-headless" not in d
    assert "opencv-python-rolling" in d["rembg"].reason


def test_any_onnxruntime_build_counts():
    d = by_name(ip.plan({**WEBUI_110, "onnxruntime-gpu": "1.17.1"}, PY310))
    assert d["onnxruntime"].action == ip.ALREADY and "onnxruntime" not in d["rembg"].needs


def test_python_rules():
    assert by_name(ip.plan(WEBUI_110, (3, 9)))["rembg"].action == ip.OFF
    assert by_name(ip.plan(WEBUI_110, (3, 12)))["tomli"].action == ip.SKIP
    assert by_name(ip.plan({**WEBUI_110, "tomli": "2.0.1"}, PY310))["tomli"].spec == "2.0.1"


def test_no_torch_or_transformers_means_off_not_install():
    host = {k: v for k, v in WEBUI_110.items() if k not in ("torch", "transformers")}
    d = by_name(ip.plan(host, PY310))
    assert d["peft"].action == ip.OFF and d["bitsandbytes"].action == ip.OFF


def test_importable_without_metadata_counts_as_installed():
    d = by_name(ip.plan(WEBUI_110, PY310, importable=["dadaptation"]))
    assert d["dadaptation"].action == ip.ALREADY


def test_a_spec_that_failed_before_on_this_venv_is_not_retried():
    d = by_name(ip.plan(WEBUI_110, PY310, failed_before=["pymatting"]))
    assert d["pymatting"].action == ip.OFF and ip.STATE_FILE in d["pymatting"].reason
    assert d["rembg"].action == ip.INSTALL  # install.py blocks it: it needs pymatting


def test_a_rule_that_would_touch_a_protected_package_is_refused(monkeypatch):
    monkeypatch.setattr(ip, "REMBG_DEPS", ip.REMBG_DEPS + ("xformers",))
    d = by_name(ip.plan(WEBUI_110, PY310))  # WEBUI_110 has no xformers
    assert d["xformers"].action == ip.OFF and "pins" in d["xformers"].reason


@pytest.mark.parametrize("version, than, expected", [
    ("2.1.2+cu121", "2.4", True), ("2.4.0", "2.4", False), ("2.3.1", "2.4", True), ("4.30.2", "4.46", True),
    ("4.46.1", "4.46", False), ("0.0.23.post1", "0.0.23", False), ("5.0.0rc1", "5", False), ("10.0", "9.9", False),
])
def test_version_comparison(version, than, expected):
    assert ip.older(version, than) is expected


def test_constraints_pin_every_installed_version_pip_can_parse():
    text = ip.constraints_text({"torch": "2.1.2+cu121", "numpy": "1.26.2", "weird": "not a version",
                                "Pillow": "9.5.0", "x": "1.0.post1"})
    assert text.splitlines() == ["numpy==1.26.2", "Pillow==9.5.0", "torch==2.1.2+cu121", "x==1.0.post1"]


def test_freeze_changes():
    before = ip.parse_freeze("numpy==1.26.2\nPillow==9.5.0\n# comment\n-e git+x#egg=y\n")
    after = ip.parse_freeze("numpy==2.2.6\npillow==9.5.0\npooch==1.9.0\nfoo @ file:///tmp/foo.whl\n")
    assert ip.freeze_changes(before, after) == {
        "added": {"pooch": "1.9.0", "foo": "file:///tmp/foo.whl"}, "removed": {},
        "changed": {"numpy": ("1.26.2", "2.2.6")}}


def test_state_round_trip_and_unreadable_state(tmp_path):
    assert ip.disabled_features(str(tmp_path)) == {}
    st = ip.InstallState(python="3.10", host_key="k", disabled={"rembg": "pip failed"})
    assert ip.write_state(st, str(tmp_path))
    assert ip.disabled_features(str(tmp_path)) == {"rembg": "pip failed"}
    (tmp_path / ip.STATE_FILE).write_text("{not json")
    assert ip.disabled_features(str(tmp_path)) == {}


# --- install.py with a stand-in launch ------------------------------------------------------------------------

def _load_install_py():
    spec = importlib.util.spec_from_file_location("lora_trainer_install_py", REPO / "install.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeLaunch:
    """Records run_pip calls; 'installs' by adding the spec to the fake venv, or raises like launch.run."""

    def __init__(self, venv: dict, fail: tuple = ()):
        self.venv, self.fail, self.calls = venv, fail, []

    def is_installed(self, package):
        return ip.normalize(package) in {ip.normalize(n) for n in self.venv}

    def run_pip(self, command, desc=None, live=False):
        constraints = re.search(r'-c "([^"]+)"', command).group(1)
        self.calls.append({"command": command, "desc": desc, "constraints": Path(constraints).read_text()})
        spec = re.match(r'install "([^"]+)"', command).group(1)
        name = re.split(r"[=<>]", spec)[0]
        if name in self.fail:
            raise RuntimeError(f"Couldn't install {desc}.\nCommand: pip {command}\nError code: 1\n"
                               f"stderr: ERROR: No matching distribution found for {spec}")
        self.venv[name] = re.split(r"==|>=", spec)[1] if re.search(r"==|>=", spec) else "9.9"


def _run(tmp_path, venv, fail=(), argv=()):
    mod = _load_install_py()
    launch = FakeLaunch(venv, fail)
    lines = []
    rc = mod.main(list(argv), launch=launch, versions=lambda: dict(venv), ext_dir=str(tmp_path),
                  out=lines.append, cv2_from=[], python=PY310)
    return rc, launch, lines


def test_install_py_installs_each_gap_under_the_hosts_constraints(tmp_path):
    venv = dict(WEBUI_110)
    rc, launch, lines = _run(tmp_path, venv)
    assert rc == 0
    assert [c["command"].split('"')[1] for c in launch.calls] == [
        "peft==0.13.2", "bitsandbytes==0.45.5", "dadaptation>=3.2", "prodigyopt", "onnxruntime", "pooch", "pymatting",
        "rembg==2.0.69", "tomli", "pillow-heif<0.17"]
    for call in launch.calls:
        pins = _pins(call["constraints"])
        for name, version in WEBUI_110.items():  # every host version, pinned in every call
            assert pins[name] == version
        assert ("--no-deps" in call["command"]) == call["command"].startswith('install "rembg')
    rembg = next(c for c in launch.calls if "rembg" in c["command"])
    assert _pins(rembg["constraints"])["pooch"] == "9.9"  # what earlier calls added is pinned too
    assert len([ln for ln in lines if ln.startswith("[LoRA Trainer] ")]) == len(lines) == 10
    state = json.loads((tmp_path / ip.STATE_FILE).read_text())
    assert state["disabled"] == {} and {d["result"] for d in state["decisions"]} == {"installed"}
    assert "transformers 4.30.2" in state["decisions"][0]["reason"]  # the why is kept for the tab
    # the next start finds everything: no pip call at all
    rc, launch, lines = _run(tmp_path, venv)
    assert launch.calls == [] and all(": already " in ln for ln in lines)


def test_a_failing_pip_switches_the_feature_off_and_install_py_still_succeeds(tmp_path):
    venv = dict(WEBUI_110)
    rc, launch, lines = _run(tmp_path, venv, fail=("pymatting",))
    assert rc == 0
    assert not any("rembg" in c["command"] for c in launch.calls), "rembg waits for its dependencies"
    off = ip.disabled_features(str(tmp_path))
    assert list(off) == ["rembg"] and "pymatting" in off["rembg"] and "No matching distribution" in off["rembg"]
    assert any(ln.startswith("[LoRA Trainer] pymatting: FAILED") and "background removal is off" in ln
               for ln in lines)
    assert "peft" in venv and "pooch" in venv  # the other packages went in
    # Next start, same venv: the failed spec is not retried at every start, and the feature stays off.
    rc, launch, lines = _run(tmp_path, venv, fail=("pymatting",))
    assert launch.calls == [] and list(ip.disabled_features(str(tmp_path))) == ["rembg"]
    # Once the venv changes, it is retried.
    venv["something-new"] = "1.0"
    rc, launch, lines = _run(tmp_path, venv)
    assert [c["command"].split('"')[1] for c in launch.calls] == ["pymatting", "rembg==2.0.69"]
    assert ip.disabled_features(str(tmp_path)) == {}


def test_dry_run_installs_nothing(tmp_path):
    rc, launch, lines = _run(tmp_path, dict(WEBUI_110), argv=["--dry-run"])
    assert rc == 0 and launch.calls == [] and len(lines) == 10
    assert not (tmp_path / ip.STATE_FILE).exists()


def test_install_py_as_the_webui_runs_it_exits_0_and_imports_nothing_heavy(tmp_path):
    """A real subprocess, cwd = a 'WebUI root' holding a stand-in launch.py whose pip always fails."""
    (tmp_path / "launch.py").write_text(textwrap.dedent("""
        import atexit, json, os, sys
        calls = []
        def is_installed(package):
            return False
        def run_pip(command, desc=None, live=False):
            calls.append(command)
            raise RuntimeError("Couldn't install " + str(desc) + ".\\nstderr: ERROR: offline")
        @atexit.register
        def _report():
            heavy = sorted(m for m in ("torch", "numpy", "transformers", "gradio") if m in sys.modules)
            with open(os.environ["REPORT"], "w") as f:
                json.dump({"calls": calls, "heavy": heavy}, f)
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}", "REPORT": str(tmp_path / "report.json"),
           "LORA_TRAINER_INSTALL_STATE_DIR": str(tmp_path)}
    env.pop("LORA_TRAINER_SKIP_INSTALL", None)
    res = subprocess.run([sys.executable, str(REPO / "install.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines and all(ln.startswith("[LoRA Trainer] ") for ln in lines), res.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["heavy"] == []
    state = ip.read_state(str(tmp_path))
    pip_failed = [d for d in state.decisions if d["reason"].startswith("pip failed: ERROR: offline")]
    assert len(pip_failed) == len(report["calls"]) == len(state.failed_specs)  # every pip failure recorded
    assert all(state.disabled.get(d["feature"]) for d in state.decisions if d["result"] == "failed")


# --- the CI's launch stand-in behaves like the WebUI's -----------------------------------------------------

def _load_shim(monkeypatch, **env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    spec = importlib.util.spec_from_file_location("ci_launch_shim", REPO / ".ci" / "launch_shim" / "launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shim_is_installed_reads_metadata_then_modules(monkeypatch):
    shim = _load_shim(monkeypatch)
    assert shim.is_installed("pip") and shim.is_installed("json")  # a distribution; a module without one
    assert not shim.is_installed("no_such_thing_lora_trainer")


def test_shim_run_pip_really_runs_pip_with_prefer_binary(monkeypatch, capsys):
    shim = _load_shim(monkeypatch)
    out = shim.run_pip("install --no-index --no-deps pip", "pip check")
    assert "already satisfied" in out.lower()
    assert capsys.readouterr().out.strip() == "Installing pip check"
    with pytest.raises(RuntimeError) as err:
        shim.run_pip("install --no-index --no-deps no-such-dist-lora-trainer", "nothing")
    msg = str(err.value)
    assert msg.startswith("Couldn't install nothing.") and "--prefer-binary" in msg and "Error code: 1" in msg
    shim = _load_shim(monkeypatch, INDEX_URL="file:///nonexistent-index")
    with pytest.raises(RuntimeError) as err:
        shim.run_pip("install --no-deps no-such-dist-lora-trainer", "nothing")
    assert "--prefer-binary --index-url file:///nonexistent-index" in str(err.value)
