"""``models``: the model store on the command line — ``list`` what can be fetched and what is on disk,
``download NAME…`` (tqdm progress on stderr; Ctrl-C keeps the partial file, the next run resumes it),
``delete NAME…``. Nothing else downloads: a step that lacks its model says to run this."""

from __future__ import annotations

import argparse
import json


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the models the store knows, where each goes, size, licence, on disk or not")
    ls.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    dl = sub.add_parser("download", help="download models by name, or a base model by hub repository id "
                                         "(owner/name[@revision], diffusers layout) or .safetensors URL "
                                         "(HF_ENDPOINT and HF_HUB_OFFLINE are honoured)")
    dl.add_argument("names", nargs="+", metavar="NAME")
    rm = sub.add_parser("delete", help="delete downloaded models by name (and their partial downloads)")
    rm.add_argument("names", nargs="+", metavar="NAME")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e6:.1f} MB"


def _run(args: argparse.Namespace) -> int:
    from . import model_store as store

    if args.models_action == "list":
        rows = [store.describe(i) for i in store.CATALOGUE] + store.cached_base_models()
        if args.json:
            print(json.dumps({"models": rows}, ensure_ascii=False))
            return 0
        for r in rows:
            mark = "downloaded" if r["downloaded"] else "missing"
            print(f"{r['id']:<26} {r['kind']:<10} {_mb(r['on_disk'] or r.get('size', 0)):>9}  "
                  f"{r.get('licence', ''):<10} "
                  f"{mark:<10} {r['folder']}")
        return 0
    for name in args.names:  # every name checked before anything is fetched or deleted
        if not store.is_remote_base(name):
            store.get_spec(name)
    if args.models_action == "delete":
        gone = [str(p) for name in args.names
                for p in (store.delete_base(name) if store.is_remote_base(name) else store.delete(name))]
        print(json.dumps({"deleted": gone}, ensure_ascii=False))
        return 0
    done = {}
    for name in args.names:
        bar = store.tqdm_progress(name)
        done[name] = (store.resolve_base_model(name, bar) if store.is_remote_base(name)
                      else str(store.ensure(name, bar)))
    print(json.dumps({"downloaded": done}, ensure_ascii=False))
    return 0


def register(commands: dict) -> None:
    commands["models"] = ("list, download or delete the models steps can fetch (taggers, background removers, "
                          "base models by hub id or URL)",
                          _args, _run)
