"""One call for the pipeline (``demo``, the API): apply the cleanup suggestions to a folder and save.

The editor shows suggestions and waits for approval; the demo and batch flows approve the removals and
additions at once and list everything (flags included) in their output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..workspace import write_json
from . import ops, rules, store


def cleanup_folder(folder: str | Path, background: Optional[str] = None, trigger: str = "",
                   rules_dir: Optional[str] = None, keep_tokens: Optional[int] = None,
                   skip_rules: Sequence[str] = ()) -> dict:
    """Apply every remove/add suggestion in ``folder``, drop duplicate tags, put the trigger first, save.

    ``skip_rules`` leaves out suggestions of those rules (``subject``, ``background``, ``implied`` or a
    remove group such as ``facial features``). Returns ``{"applied": [...], "flagged": [...], "written": n,
    "backup": path|None}``, each suggestion as ``{"image", "tag", "action", "reason"}``.
    """
    st = store.load(folder)
    caps = st.captions()
    keep = (1 if trigger else 0) if keep_tokens is None else keep_tokens
    sugg = [s for s in rules.suggest(caps, background, trigger, rules.load_tables(rules_dir)) if s.rule not in skip_rules]
    applied = [s for s in sugg if s.action in ("remove", "add")]
    new = ops.bulk_dedupe(rules.apply_suggestions(caps, applied, keep))
    if trigger:
        new = ops.bulk_trigger_first(new, trigger)
    st.apply(new, "cleanup")
    rep = st.save()
    return {"applied": [s.to_json() for s in applied], "flagged": [s.to_json() for s in sugg if s.action == "flag"],
            "written": len(rep.written), "backup": str(rep.backup) if rep.backup else None}


def demo_step(run, trigger: str = "", background: Optional[str] = None, skip_rules: Sequence[str] = ("subject",)) -> None:
    """The demo's cleanup step, after auto-tag: ``run`` is the demo's ``DemoRun`` (image_dir, output_dir, say,
    figures). The toy world has no people, so the gender/count flag is skipped by default; ``background``
    is the fill the preparation step used, when the demo replaced backgrounds.
    """
    res = cleanup_folder(run.image_dir, background=background, trigger=trigger, skip_rules=skip_rules)
    write_json(Path(run.output_dir) / "cleanup.json", res)
    run.figures["cleanup"] = {"applied": len(res["applied"]), "flagged": len(res["flagged"]),
                              "captions_written": res["written"]}
    run.say(f"cleanup: {len(res['applied'])} suggestion(s) applied to {res['written']} caption(s), "
            f"{len(res['flagged'])} flagged (list in cleanup.json)")
    for s in res["applied"] + res["flagged"]:
        run.say(f"  {s['image']}: {s['action']} {s['tag']!r} — {s['reason']}")
