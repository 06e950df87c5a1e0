"""The editor: session actions (what every button does) and the gradio fragment with its keyboard ids."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.errors import UserError
from lora_trainer.tags.session import EditorSession

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "javascript" / "lora_trainer_tags.js"


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "set"
    d.mkdir()
    for k, cap in {"a": "1girl, long hair, nose, hat, witch hat", "b": "1girl, smile, outdoors", "c": "cat, no humans"}.items():
        Image.new("RGB", (16, 16), (10, 120, 200)).save(d / f"{k}.png")
        (d / f"{k}.txt").write_text(cap, encoding="utf-8")
    return d


def test_navigation_and_search_in_both_languages(folder):
    s = EditorSession.open(folder)
    assert s.current == "a.png" and s.image_path().endswith("a.png")
    assert s.image_keys("微笑") == ["b.png"] and s.image_keys("smile") == ["b.png"]
    assert s.image_keys("发") == ["a.png"] and s.image_keys("") == ["a.png", "b.png", "c.png"]
    s.step(1)
    assert s.current == "b.png"
    s.step(1)
    s.step(1)
    assert s.current == "a.png"                       # wraps around
    s.step(-1)
    assert s.current == "c.png"
    s.step(1, "1girl")                                # c is not among the matches: go to the first match
    assert s.current == "a.png"
    s.select("b.png")
    s.select("nope.png")
    assert s.current == "b.png"
    with pytest.raises(UserError):
        EditorSession.open("  ")


def test_per_image_edits_with_translation_and_undo(folder):
    s = EditorSession.open(folder)
    labels = dict((v, k) for k, v in s.tag_choices())
    assert labels["long hair"] == "long hair · 长发" and labels["nose"] == "nose · 鼻子"
    assert s.delete(["nose", "hat"]).startswith("delete")
    assert s.tags() == ["1girl", "long hair", "witch hat"]
    assert s.delete([]) == "tick tags first"
    s.add("微笑，sks", position="front")                # Chinese typed, full-width comma
    assert s.tags() == ["smile", "sks", "1girl", "long hair", "witch hat"]
    s.move_front(["sks"])
    assert s.tags()[0] == "sks"
    s.add("blush", position="front", keep_tokens=1)
    assert s.tags()[:2] == ["sks", "blush"]
    with pytest.raises(UserError):
        s.add("不存在的词")
    s.set_caption("sks, 1girl,  smile")
    assert s.caption() == "sks, 1girl, smile"
    assert s.undo().startswith("undid") and s.tags()[:2] == ["sks", "blush"]
    assert s.redo().startswith("redid") and s.caption() == "sks, 1girl, smile"
    assert "unsaved" in s.status()
    assert s.save().startswith("saved 1 caption")
    assert (folder / "a.txt").read_text(encoding="utf-8") == "sks, 1girl, smile"
    assert s.save() == "nothing to save" and "all saved" in s.status()


def test_bulk_frequency_and_suggestions(folder):
    s = EditorSession.open(folder)
    assert s.bulk("add", "sks", flt="1girl", position="front") == "add: changed 2 of 2 selected images"
    assert s.store.tags("c.png") == ["cat", "no humans"]
    s.bulk("trigger", trigger="sks")
    assert all(s.store.tags(k)[0] == "sks" for k in s.store.keys())
    s.bulk("replace", "witch hat", to="贝雷帽")          # the replacement may be typed in Chinese too
    assert "beret" in s.store.tags("a.png")
    s.bulk("remove", "sks", flt="NOT 1girl")
    assert s.store.tags("c.png") == ["cat", "no humans"]
    with pytest.raises(UserError):
        s.bulk("add", "")
    with pytest.raises(UserError):
        s.bulk("explode")
    rows = s.freq_rows()
    assert rows[:2] == [["1girl", "一个女孩", 2, "67%"], ["sks", "", 2, "67%"]]   # ties by name
    assert [r[0] for r in s.freq_rows("猫")] == ["cat"]
    assert s.freq_rows(flt="no humans")[0][3] == "100%"

    s.find_suggestions("white", "sks")
    choices = s.suggestion_choices()
    texts = [label for label, _ in choices]
    assert any("a.png: remove nose · 鼻子" in t for t in texts)
    assert any("b.png: remove outdoors · 户外" in t for t in texts)
    nose = next(v for label, v in choices if "remove nose" in label)
    assert s.approve([nose]) == "applied 1 suggestion(s) to 1 image(s)"
    assert "nose" not in s.store.tags("a.png") and len(s.suggestions) == len(choices) - 1
    s.approve(None)
    assert "outdoors" not in s.store.tags("b.png") and "white background" in s.store.tags("c.png")
    assert s.suggestions == []                           # every image has a gender/count tag: nothing flagged
    s.undo()
    assert "outdoors" in s.store.tags("b.png") and "nose" not in s.store.tags("a.png")


def test_fragment_builds_and_load_renders(folder):
    gr = pytest.importorskip("gradio")
    from lora_trainer.ui.edit_tags import build_tag_editor

    with gr.Blocks() as demo:
        parts = build_tag_editor(lambda: str(folder))
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    js_ids = set(re.findall(r'"(lt-tags-[a-z-]+)"', JS.read_text(encoding="utf-8")))
    assert js_ids and js_ids <= ids, js_ids - ids
    # the Load button's handler, called as gradio would
    dep = next(i for i, d in enumerate(demo.dependencies) if parts["load"]._id in d["targets"]
               or any(t == parts["load"]._id or (isinstance(t, (list, tuple)) and t[0] == parts["load"]._id)
                      for t in d["targets"]))
    out = demo.fns[dep].fn("", "", "")                   # empty box: the default folder from get_folder()
    sess, status, images, preview = out[:4]
    assert isinstance(sess, EditorSession) and "image 1/3" in status
    assert images["choices"] == ["a.png", "b.png", "c.png"] and preview.endswith("a.png")
    assert ("long hair · 长发", "long hair") in out[4]["choices"]
    bad = demo.fns[dep].fn(str(folder / "missing"), "", "")
    assert bad[0] is None and "folder not found" in bad[1]


def test_keyboard_script_names_are_prefixed():
    src = JS.read_text(encoding="utf-8")
    globals_ = re.findall(r"^(?:function\s+(\w+)|(?:var|let|const)\s+(\w+))", src, flags=re.M)
    names = [a or b for a, b in globals_]
    assert names and all(n.startswith("lora_trainer_") for n in names), names
    for key in ("Delete", "ArrowRight", "ArrowLeft", "z"):
        assert f'"{key}"' in src


NODE_DRIVER = r"""
const fs = require("fs"), vm = require("vm");
const clicks = [];
const el = (id, tag) => ({ id, tagName: tag, offsetParent: {}, click: () => clicks.push(id), querySelector: () => null });
const ids = {"lt-tags-editor": el("lt-tags-editor", "DIV")};
for (const b of ["delete", "next", "prev", "undo", "redo"]) ids["lt-tags-" + b] = el("lt-tags-" + b, "BUTTON");
let handler = null;
const document = { addEventListener: (t, f) => { handler = f; }, querySelector: (sel) => ids[sel.slice(1)] || null };
vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"), { document });
const target = (tag, type) => ({ tagName: tag, getAttribute: () => type || null, isContentEditable: false });
const press = (key, mods, tgt) => {
  const e = Object.assign({ key, ctrlKey: false, metaKey: false, altKey: false, shiftKey: false,
    defaultPrevented: false, target: tgt || target("BODY"), preventDefault() { this.defaultPrevented = true; } }, mods);
  handler(e); return e.defaultPrevented;
};
const out = [];
out.push(press("Delete"), press("ArrowRight"), press("PageUp"), press("z", { ctrlKey: true }),
         press("Z", { ctrlKey: true, shiftKey: true }), press("y", { metaKey: true }),
         press("Delete", {}, target("TEXTAREA")), press("ArrowLeft", {}, target("INPUT", "text")),
         press("Delete", {}, target("INPUT", "checkbox")), press("a"));
ids["lt-tags-editor"].offsetParent = null;  // editor tab hidden: keys belong to the rest of the WebUI
out.push(press("Delete"));
console.log(JSON.stringify({ clicks, out }));
"""


def run_in_node(tmp_path, driver_src: str, script):
    """Run ``driver_src`` (a node program given the script's path) and return the JSON it prints; skip without
    node (the scripts are checked in a browser-free JS runtime)."""
    import json
    import shutil
    import subprocess

    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed: the script is checked in a browser-free JS runtime")
    driver = tmp_path / "driver.js"
    driver.write_text(driver_src, encoding="utf-8")
    res = subprocess.run([node, str(driver), str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_keyboard_script_in_node(tmp_path):
    got = run_in_node(tmp_path, NODE_DRIVER, JS)
    assert got["clicks"] == ["lt-tags-delete", "lt-tags-next", "lt-tags-prev", "lt-tags-undo", "lt-tags-redo",
                             "lt-tags-redo", "lt-tags-delete"]
    assert got["out"] == [True, True, True, True, True, True, False, False, True, False, False]


PROJECTS_DRIVER = r"""
const fs = require("fs"), vm = require("vm");
const clicks = [], hooks = {loaded: [], tab: []};
const btn = { tagName: "BUTTON", offsetParent: {}, click: () => clicks.push("refresh"), querySelector: () => null };
const app = { querySelector: (sel) => sel === "#lt-project-refresh" ? btn : null };
vm.runInNewContext(fs.readFileSync(process.argv[2], "utf8"), {
  gradioApp: () => app, document: app,
  onUiLoaded: (f) => hooks.loaded.push(f), onUiTabChange: (f) => hooks.tab.push(f) });
const n = () => clicks.length;
const out = [hooks.loaded.length, hooks.tab.length];
hooks.loaded.forEach((f) => f()); out.push(n());      // UI up with our tab on screen: refreshed
btn.offsetParent = null; hooks.tab.forEach((f) => f()); out.push(n());  // another tab shown: nothing
btn.offsetParent = {}; hooks.tab.forEach((f) => f()); out.push(n());    // ours again: refreshed
console.log(JSON.stringify(out));
"""


def test_project_list_refresh_script_in_node(tmp_path):
    """On a WebUI page that is already open, the script clicks ↻ when the UI is up and when our tab is
    opened, and only then (the element id is the tab's real one)."""
    script = REPO / "javascript" / "lora_trainer_projects.js"
    assert '"#lt-project-refresh"' in script.read_text(encoding="utf-8")
    assert 'elem_id=ctx.tip("lt-project-refresh"' in (REPO / "lora_trainer" / "ui" / "tab.py").read_text(encoding="utf-8")
    assert run_in_node(tmp_path, PROJECTS_DRIVER, script) == [1, 1, 1, 1, 2]
