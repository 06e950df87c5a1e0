"""The ``prepare`` and ``tag`` commands (INTERFACES.md §1), flags generated from PrepareConfig/TagConfig.

``prepare`` runs in a worker thread so Ctrl-C can stop it cleanly: the batch finishes the images in
flight, writes ``report.json`` and the command exits 130. Exit 0 when at least one image was processed;
2 when none could be (the report says why for each file).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from ..errors import UserError
from .config import PrepareConfig, TagConfig, split_options

EXIT_OK, EXIT_USAGE, EXIT_CANCELLED = 0, 2, 130


def _configs(args: argparse.Namespace, prepare: bool):
    """Defaults < ``--config`` file (flat keys or [prepare]/[tag] tables) < flags."""
    from ..cli import config_from_args
    from ..config import field_meta, from_dict, load_file

    data = load_file(args.config) if getattr(args, "config", None) else {}
    prep_data, tag_data = split_options(data)
    flags = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "config"})
    tag_cfg = config_from_args(TagConfig, flags, tag_data)
    if not prepare:  # a shared file's prepare-only keys are fine here; unknown keys are not
        known = set(field_meta(PrepareConfig)) | set(field_meta(TagConfig))
        unknown = [k for k in prep_data if k not in known]
        if unknown:
            from_dict(TagConfig, {unknown[0]: prep_data[unknown[0]]})  # raises, with a suggestion
        return None, tag_cfg
    return config_from_args(PrepareConfig, flags, prep_data), tag_cfg


class _Bar:
    def __init__(self):
        self.bars = {}

    def __call__(self, p) -> None:
        from tqdm import tqdm

        bar = self.bars.get(p.phase)
        if bar is None:
            bar = self.bars[p.phase] = tqdm(total=p.total, desc=p.phase, unit="img", file=sys.stderr,
                                            disable=None)
        bar.total = p.total
        bar.n = p.step
        bar.refresh()

    def close(self) -> None:
        for b in self.bars.values():
            b.close()


def _in_thread(fn):
    """Run ``fn(should_stop)`` in a thread; Ctrl-C sets the stop flag and waits for it to finish.

    Completion is an Event, not ``Thread.join``: a join interrupted by Ctrl-C can return early later.
    """
    stop, done = threading.Event(), threading.Event()
    box: dict = {}

    def target():
        try:
            box["result"] = fn(stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="lora-trainer-prepare", daemon=True).start()
    while True:
        try:
            while not done.wait(0.2):
                pass
            break
        except KeyboardInterrupt:
            if not stop.is_set():
                print("\ncancelling: finishing the images in flight, writing the report…", file=sys.stderr)
            stop.set()
    if "error" in box:
        raise box["error"]
    return box["result"], stop.is_set()


def _prepare_args(p: argparse.ArgumentParser) -> None:
    from ..cli import add_config_flags

    p.add_argument("--input", required=True, metavar="SRC", help="folder of images (or a .zip); only read")
    p.add_argument("--output-dir", required=True, metavar="DEST",
                   help="where the prepared images, masks, previews and report.json go")
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file of options; flags override it")
    add_config_flags(p, PrepareConfig)
    add_config_flags(p, TagConfig, skip=("tagger", "trigger"))


def _prepare(args: argparse.Namespace) -> int:
    from . import report as R
    from .pipeline import prepare_folder

    cfg, tag_cfg = _configs(args, prepare=True)
    bar = _Bar()
    try:
        rep, stopped = _in_thread(lambda stop: prepare_folder(args.input, args.output_dir, cfg, bar, stop, tag_cfg))
    finally:
        bar.close()
    for line in R.lines(rep):
        print(line, file=sys.stderr)
    c = rep["counts"]
    print(json.dumps({"status": "cancelled" if rep["cancelled"] else "finished", "processed": c["ok"],
                      "skipped": c["skipped"], "failed": c["failed"], "warnings": c["warnings"],
                      "report": str(Path(args.output_dir) / R.REPORT_NAME)}, ensure_ascii=False))
    if rep["cancelled"] or stopped:
        return EXIT_CANCELLED
    if c["ok"] == 0:
        raise UserError(f"no image could be processed ({c['files']} files)",
                        f"see {Path(args.output_dir) / R.REPORT_NAME} for each file's reason")
    return EXIT_OK


def _tag_args(p: argparse.ArgumentParser) -> None:
    from ..cli import add_config_flags

    p.add_argument("--input", required=True, metavar="DIR", help="folder of images; captions go beside them")
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file of options; flags override it")
    add_config_flags(p, TagConfig)


def _tag(args: argparse.Namespace) -> int:
    from ..tagging.autotag import tag_folder

    _, cfg = _configs(args, prepare=False)
    if cfg.tagger == "none":
        raise UserError("no tagger chosen", "give --tagger toy, wd14 (or deepbooru/clip in the WebUI)")
    bar = _Bar()
    try:
        rep, stopped = _in_thread(lambda stop: tag_folder(args.input, cfg, None, bar, stop))
    finally:
        bar.close()
    for f in rep["files"]:
        if f["status"] == "skipped":
            print(f"skipped: {f['file']}: {f.get('reason', '')}", file=sys.stderr)
    print(json.dumps({"status": "cancelled" if rep["cancelled"] else "finished", "tagger": rep["tagger"],
                      **rep["counts"], "backup": rep["backup"]}, ensure_ascii=False))
    return EXIT_CANCELLED if rep["cancelled"] or stopped else EXIT_OK


def register(commands: dict) -> None:
    commands["prepare"] = ("import, crop, remove backgrounds (and tag) a folder of photos; DEST/report.json",
                           _prepare_args, _prepare)
    commands["tag"] = ("auto-tag a folder of images; captions (.txt) beside them", _tag_args, _tag)
