"""Stand-in for the WebUI's ``launch`` module, so CI runs the real install.py the way the WebUI does.

The WebUI's ``launch.py`` re-exports ``modules/launch_utils.py``; an extension's install.py uses only
``is_installed``, ``run_pip`` (and through it ``run``), ``args`` and ``python``. These behave as in WebUI
v1.10.1: ``run_pip`` really runs ``"{python}" -m pip {command} --prefer-binary[ --index-url $INDEX_URL]`` in a
shell, prints ``Installing {desc}``, captures the output unless ``WEBUI_LAUNCH_LIVE_OUTPUT=1`` and raises
RuntimeError (with pip's stdout and stderr) when pip fails. Written from that file's documented behaviour.
"""

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import types

python = sys.executable
index_url = os.environ.get("INDEX_URL", "")
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"
args = types.SimpleNamespace(skip_install=False)


def run(command, desc=None, errdesc=None, custom_env=None, live: bool = default_command_live) -> str:
    if desc is not None:
        print(desc)
    kwargs = {"args": command, "shell": True, "env": os.environ if custom_env is None else custom_env,
              "encoding": "utf8", "errors": "ignore"}
    if not live:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    result = subprocess.run(**kwargs)
    if result.returncode != 0:
        bits = [f"{errdesc or 'Error running command'}.", f"Command: {command}",
                f"Error code: {result.returncode}"]
        if result.stdout:
            bits.append(f"stdout: {result.stdout}")
        if result.stderr:
            bits.append(f"stderr: {result.stderr}")
        raise RuntimeError("\n".join(bits))
    return result.stdout or ""


def is_installed(package):
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False
        return spec is not None
    return dist is not None


def run_pip(command, desc=None, live=default_command_live):
    if args.skip_install:
        return None
    index_url_line = f" --index-url {index_url}" if index_url != "" else ""
    return run(f'"{python}" -m pip {command} --prefer-binary{index_url_line}', desc=f"Installing {desc}",
               errdesc=f"Couldn't install {desc}", live=live)
