"""``python -m lora_trainer tags suggest|apply|freq|add|remove|replace --input DIR`` (INTERFACES.md §1).

The shell face of the tag editor: each action loads the folder, runs one pure operation over the selected
images (``--filter``), and saves the changed captions with a backup. ``--dry-run`` shows without saving.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from ..errors import UserError

ACTIONS = {
    "suggest": "list cleanup suggestions (facial features, implied tags, missing gender/count, background)",
    "apply": "apply the cleanup suggestions (remove/add) and drop duplicate tags; saves with a backup",
    "freq": "tag frequency table: images per tag and share of the selection, with the Chinese name",
    "add": "add --tags to the selected images (--position front|back)",
    "remove": "remove --tags from the selected images",
    "replace": "rename --tags to --to in the selected images",
}


def _add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tags_action", metavar="ACTION")
    sub.required = True
    for name, help_text in ACTIONS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("--input", required=True, metavar="DIR", help="folder of images with .txt/.caption captions")
        sp.add_argument("--filter", default="", metavar="EXPR",
                        help="only images whose tags match, e.g. '1girl AND (smile OR grin) AND NOT hat'")
        sp.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name in ("suggest", "apply"):
            sp.add_argument("--background", default=None, metavar="FILL",
                            help="background the preparation step produced: white, transparent, #RRGGBB, a colour "
                                 "name, or none (default: no background rule)")
            sp.add_argument("--rules", default=None, metavar="DIR", help="your rules tables, merged over the shipped ones")
        if name == "apply":
            sp.add_argument("--only", default="remove,add", help="which suggestions to apply (default remove,add)")
        if name == "freq":
            sp.add_argument("--top", type=int, default=0, help="show only the N most frequent tags")
        if name in ("add", "remove", "replace"):
            sp.add_argument("--tags", required=True, help="comma-separated tags")
        if name == "add":
            sp.add_argument("--position", choices=("front", "back"), default="back",
                            help="front (after the first --keep-tokens tags) or back (default)")
        if name == "replace":
            sp.add_argument("--to", required=True, metavar="TAG", help="the new tag (empty string: remove)")
        if name not in ("freq",):
            sp.add_argument("--trigger", default="", metavar="WORD", help="trigger word: kept first in every caption")
            sp.add_argument("--keep-tokens", type=int, default=None, metavar="N",
                            help="tags kept at the front (default: 1 with --trigger, else 0)")
            sp.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")


def _out(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False) if args.json else text)


def _finish(args, store, new: dict, label: str, extra: dict) -> int:
    from . import ops

    changed = ops.changed_keys(store.captions(), new)
    report = None
    if not args.dry_run:
        store.apply(new, label)
        report = store.save()
    payload = {"action": args.tags_action, "changed": len(changed), "images": len(store),
               "written": len(report.written) if report else 0,
               "backup": str(report.backup) if report and report.backup else None,
               "dry_run": bool(args.dry_run), **extra}
    where = "" if args.dry_run else (f"; backup of the old captions in {report.backup}" if report.backup else "")
    verb = "would change" if args.dry_run else "changed"
    _out(args, payload, f"{label}: {verb} {len(changed)} of {len(store)} captions{where}")
    for w in store.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    from . import ops, rules, store as store_mod
    from .translate import get_translator

    st = store_mod.load(args.input)
    caps = st.captions()
    flt = ops.parse_filter(args.filter)
    keys = ops.select(caps, flt)
    keep = getattr(args, "keep_tokens", None)
    keep = (1 if getattr(args, "trigger", "") else 0) if keep is None else keep
    action = args.tags_action

    if action == "freq":
        tr = get_translator()
        rows = ops.frequency(caps, keys)
        if args.top:
            rows = rows[:args.top]
        data = [{"tag": r.tag, "count": r.count, "share": round(r.share, 4), "zh": tr.zh(r.tag)} for r in rows]
        text = "\n".join(f"{r['count']:6d}  {r['share'] * 100:5.1f}%  {r['tag']}" + (f"  ({r['zh']})" if r["zh"] else "")
                         for r in data)
        print(json.dumps(data, ensure_ascii=False) if args.json else (text or "(no tags)"))
        return 0

    if action in ("suggest", "apply"):
        tables = rules.load_tables(args.rules)
        sugg = rules.suggest(caps, args.background, getattr(args, "trigger", ""), tables, keys)
        if action == "suggest":
            if args.json:
                print(json.dumps([s.to_json() for s in sugg], ensure_ascii=False))
            else:
                for s in sugg:
                    print(f"{s.image}: {s.action} {s.tag!r} — {s.reason}" if s.tag else f"{s.image}: {s.action} — {s.reason}")
                print(f"{len(sugg)} suggestion(s) for {len(keys)} image(s)", file=sys.stderr)
            return 0
        only = {a.strip() for a in args.only.split(",") if a.strip()}
        bad = only - {"remove", "add"}
        if bad:
            raise UserError(f"--only {args.only!r}: unknown {', '.join(sorted(bad))}", "use remove, add or remove,add")
        chosen = [s for s in sugg if s.action in only]
        new = ops.bulk_dedupe(rules.apply_suggestions(caps, chosen, keep), keys)
        if args.trigger:
            new = ops.bulk_trigger_first(new, args.trigger, keys)
        return _finish(args, st, new, "apply suggestions",
                       {"applied": [s.to_json() for s in chosen],
                        "flagged": [s.to_json() for s in sugg if s.action == "flag"]})

    if args.trigger:  # first, so that --position front lands after it (keep_tokens)
        caps = ops.bulk_trigger_first(caps, args.trigger, keys)
    tags = ops.as_list(args.tags)
    if not tags:
        raise UserError("--tags is empty", "give one or more comma-separated tags")
    if action == "add":
        new = ops.bulk_add(caps, tags, keys, args.position, keep)
    elif action == "remove":
        new = ops.bulk_remove(caps, tags, keys)
    else:
        new = ops.bulk_replace(caps, tags, args.to, keys)
    return _finish(args, st, new, f"{action} {', '.join(tags)}" + (f" -> {args.to}" if action == "replace" else ""),
                   {"selected": len(keys)})


def register(commands: dict) -> None:
    commands["tags"] = ("edit a folder's captions: suggest|apply|freq|add|remove|replace", _add_arguments, _run)


def main(argv: Optional[list] = None) -> int:  # pragma: no cover - convenience for `python -m lora_trainer.tags.cli`
    from ..cli import main as cli_main

    return cli_main(["tags", *(argv if argv is not None else sys.argv[1:])])
