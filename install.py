"""LoRA Trainer's installer, run by the WebUI at every start in the WebUI's own venv (WEBUI_API.md §1.3).

The WebUI runs this file as a subprocess with its root on PYTHONPATH, so ``import launch`` works here. It fills
gaps only: the decisions come from ``lora_trainer.install_plan`` (pure, unit-tested); this file carries them
out through ``launch.run_pip``, every call with all installed versions as pip constraints so nothing the
WebUI has can move, and prints one line per decision. A package that cannot be installed switches its
feature off (written to ``.install_state.json``, which the tab reads) and this still exits 0: the extension
must load whatever pip does. Nothing heavy is imported here (no torch): it runs before every WebUI start.

``python install.py --dry-run`` (or ``LORA_TRAINER_SKIP_INSTALL=1``) prints the decisions and installs nothing.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import tempfile

EXT_DIR = os.path.dirname(os.path.abspath(__file__))
if EXT_DIR not in sys.path:
    sys.path.insert(0, EXT_DIR)

from lora_trainer import install_plan as ip  # noqa: E402  (stdlib-only module)

IMPORT_NAMES = ("peft", "bitsandbytes", "dadaptation", "prodigyopt", "onnxruntime", "rembg", "tomli")
"""Module names asked of ``launch.is_installed`` when a distribution has no metadata."""


def installed_versions() -> dict[str, str]:
    """Every distribution the interpreter sees -> version; the first on sys.path wins, as for imports."""
    importlib.invalidate_caches()
    out: dict[str, str] = {}
    seen = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name or ip.normalize(name) in seen:
            continue
        seen.add(ip.normalize(name))
        out[name] = dist.version
    return out


def _error_tail(exc: BaseException, limit: int = 300) -> str:
    """The informative end of a pip failure (launch.run puts all of stdout/stderr in the message)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    errors = [ln[ln.index("ERROR"):] for ln in lines if "ERROR" in ln]  # pip's, after launch's "stderr: "
    text = " | ".join((errors or lines)[-2:]) or type(exc).__name__
    return text[:limit]


def _install(launch, d: ip.Decision, versions) -> tuple[bool, str, bool, list[str]]:
    """Run one pip install under constraints. Returns (ok, reason, pip_failed, moved distributions)."""
    current = versions()
    fd, path = tempfile.mkstemp(prefix="lora_trainer_constraints_", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(ip.constraints_text(current))
        launch.run_pip(d.pip_command(path), f"{d.spec} for LoRA Trainer")
    except Exception as exc:  # pip failed: RuntimeError from launch.run, or anything odd in a host's launch
        return False, f"pip failed: {_error_tail(exc)}", True, []
    finally:
        try:
            os.remove(path)
        except OSError:
            pass
    after = {ip.normalize(k): v for k, v in versions().items()}
    moved = [f"{n} {v} -> {after.get(ip.normalize(n), 'removed')}" for n, v in current.items()
             if after.get(ip.normalize(n)) != v]
    if ip.normalize(d.name) not in after:
        return False, "pip did not install it (WebUI started with --skip-install?)", False, moved
    return True, "", False, moved


def main(argv=None, launch=None, versions=installed_versions, ext_dir: str | None = None, out=print,
         cv2_from=None, python=None) -> int:
    """Plan, install what is missing, record what is off. Always returns 0 (see the module docstring).

    The state file goes beside this file, or to ``$LORA_TRAINER_INSTALL_STATE_DIR`` (CI keeps it in the venv).
    """
    ext_dir = ext_dir or os.environ.get("LORA_TRAINER_INSTALL_STATE_DIR") or EXT_DIR
    argv = sys.argv[1:] if argv is None else argv
    dry = "--dry-run" in argv or os.environ.get("LORA_TRAINER_SKIP_INSTALL") == "1"
    if launch is None and not dry:
        try:
            import launch  # the WebUI's; on PYTHONPATH when the WebUI runs us
        except ImportError:
            out(f"{ip.PREFIX} not run by the WebUI (no `launch` module): planning only, nothing installed")
            dry = True
    python = tuple(python or sys.version_info[:2])
    before = versions()
    have = {ip.normalize(n) for n in before}
    importable = []
    if launch is not None and hasattr(launch, "is_installed"):
        importable = [n for n in IMPORT_NAMES if n not in have and launch.is_installed(n)]
    prev = ip.read_state(ext_dir)
    failed_before = prev.failed_specs if prev.host_key == ip.host_key(before, python) else []
    if cv2_from is None:
        cv2_from = ip.installed_cv2_distributions()
    decisions = ip.plan(before, python, importable, failed_before, cv2_from)

    state = ip.InstallState(python=".".join(map(str, python)))
    failed: set[str] = set()
    for d in decisions:
        out(d.line())
        result, reason = d.action, d.reason
        if d.action == ip.OFF:
            failed.add(d.name)
            if d.spec and d.spec in failed_before:
                state.failed_specs.append(d.spec)
        elif d.action == ip.INSTALL and dry:
            result = "planned"
        elif d.action == ip.INSTALL:
            blocked = [n for n in d.needs if n in failed]
            if blocked:
                why = f"needs {', '.join(blocked)}, which could not be installed"
                ok, pip_failed, moved = False, False, []
            else:
                ok, why, pip_failed, moved = _install(launch, d, versions)
            reason = reason if ok else why
            for m in moved:
                out(f"{ip.PREFIX} WARNING: installing {d.spec} changed {m}")
            result = "installed" if ok else "failed"
            if not ok:
                failed.add(d.name)
                if pip_failed:
                    state.failed_specs.append(d.spec)
                what = ip.FEATURES.get(d.feature, d.feature)
                out(f"{ip.PREFIX} {d.name}: FAILED: {reason}; {what} is off "
                    f"(the extension still loads; see {ip.STATE_FILE})")
        if result in (ip.OFF, "failed") and d.feature:
            state.disabled.setdefault(d.feature, reason)
        state.decisions.append({"name": d.name, "action": d.action, "spec": d.spec, "reason": reason,
                                "feature": d.feature, "result": result})
    if not dry:
        state.host_key = ip.host_key(versions(), python)
        ip.write_state(state, ext_dir)
    return 0


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # never fail the WebUI's start-up because of us
        print(f"{ip.PREFIX} install.py failed ({type(exc).__name__}: {exc}); optional features may be off")
    sys.exit(0)
