"""The tab's pure pieces: controls from the dataclasses, translations, progress, errors, pictures, and the
prefixed names the tab shares the WebUI's page with. No model, no server."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from pathlib import Path

import pytest

from lora_trainer.config import TrainConfig, from_dict
from lora_trainer.errors import UserError
from lora_trainer.prepare.config import PrepareConfig, TagConfig
from lora_trainer.ui import controls as C
from lora_trainer.ui.i18n import Translator, resolve_lang, table

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,label", [("unet_lr", "UNet LR"), ("save_every_n_epochs", "Save every N epochs"),
                                        ("min_bucket_reso", "Min bucket resolution"), ("te_lr_ratio", "TE LR ratio"),
                                        ("rank", "Rank")])
def test_labels_from_field_names(name, label):
    assert C.field_label(name) == label


def test_collect_round_trips_every_train_field_through_from_dict():
    """What the controls show (lists as text) comes back as the same config."""
    cfg = dataclasses.replace(TrainConfig(), save_fractions=[0.25, 0.5], sample_prompts=["a, b", "c"], rank=16,
                              unet_lr=3.5e-5, enable_buckets=False, optimizer="Prodigy")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    shown = [C.to_display(TrainConfig, n, getattr(cfg, n)) for n in names]
    assert shown[names.index("save_fractions")] == "0.25, 0.5"
    assert shown[names.index("sample_prompts")] == "a, b | c"      # prompts keep their commas
    back = from_dict(TrainConfig, C.collect(TrainConfig, names, shown))
    assert back == cfg


def test_collect_drops_empty_numbers_and_makes_whole_floats_ints():
    raw = C.collect(TrainConfig, ["rank", "epochs", "unet_lr", "name"], [8.0, None, "", "x"])
    assert raw == {"rank": 8, "name": "x"} and isinstance(raw["rank"], int)
    with pytest.raises(UserError, match="rank"):
        from_dict(TrainConfig, C.collect(TrainConfig, ["rank"], [0]))   # below min: the dataclass says so


def test_every_field_gets_a_control_of_the_right_kind_and_a_tooltip():
    gr = pytest.importorskip("gradio")
    tips: dict = {}
    with gr.Blocks():
        for cls, prefix in ((TrainConfig, "lt-train"), (PrepareConfig, "lt-prepare"), (TagConfig, "lt-tag")):
            ctrls = C.grouped_controls(cls, Translator("en"), tips, prefix)
            for f in dataclasses.fields(cls):
                c = ctrls[f.name]
                eid = C.elem_id(prefix, f.name)
                assert c.elem_id == eid and tips[eid] == f.metadata["help"]
                if f.metadata.get("choices"):
                    assert isinstance(c, gr.Dropdown) and list(f.metadata["choices"]) == [
                        x[0] if isinstance(x, tuple) else x for x in c.choices]
                elif isinstance(C.default_of(cls, f.name), bool):
                    assert isinstance(c, gr.Checkbox)
                elif isinstance(C.default_of(cls, f.name), (int, float)):
                    assert isinstance(c, gr.Number)
                    if "min" in f.metadata:
                        assert c.minimum == f.metadata["min"]
    assert not C.check_ids(tips)
    assert C.check_ids(["lt-ok-1", "LT-bad", "lt_bad", "other"]) == ["LT-bad", "lt_bad", "other"]


@pytest.mark.parametrize("value,lang", [("zh_CN", "zh_CN"), ("zh-CN", "zh_CN"), ("zh_Hans (Stable)", "zh_CN"),
                                        ("简体中文", "zh_CN"), ("zh_TW", "en"), ("None", "en"), (None, "en"),
                                        ("ja_JP", "en"), ("en", "en")])
def test_language_names_from_the_webui(value, lang):
    assert resolve_lang(value) == lang


def test_translator_formats_and_records_what_it_lacks():
    t = Translator("zh_CN")
    assert t("Cancel") == "取消"
    assert t("{n} image(s) added.", n=3) == "已添加 3 张图片。"
    assert t("no such string") == "no such string" and t.missing == {"no such string"}
    en = Translator("en")
    assert en("{n} image(s) added.", n=3) == "3 image(s) added." and not en.missing


def test_translation_table_keeps_every_placeholder():
    for en, zh in table("zh_CN").items():
        assert set(re.findall(r"{[^}]*}", en)) == set(re.findall(r"{[^}]*}", zh)), en


def test_progress_bar_html():
    from lora_trainer.ui.common import progress_html

    st = {"status": "running", "progress": {"step": 25, "total": 100, "loss": 0.1234, "it_s": 2.0, "eta": 90,
                                            "phase": "train"}}
    out = progress_html(st)
    assert 'data-status="running"' in out and "width:25.0%" in out
    assert "25/100" in out and "loss 0.1234" in out and "1 min 30 s left" in out
    assert "width:100.0%" in progress_html({"status": "finished", "progress": {"step": 3, "total": 7}})
    assert "<b>" not in progress_html({"status": "running", "progress": {"file": "<b>x.png", "step": 1, "total": 2}})


def test_errors_show_message_and_hint_never_a_traceback(caplog):
    from lora_trainer.ui.common import error_text, guard

    assert error_text(UserError("no images in x", "add some")) == "⚠ **no images in x** — add some"
    try:
        raise ValueError("boom")
    except ValueError as exc:
        out = error_text(exc)
    assert "ValueError: boom" in out and "Traceback" not in out and "log" in out
    assert "Traceback" in caplog.text                      # ...it went to the log instead

    def bad(a):
        raise UserError("nope", "do this")
    res = guard(3)(bad)(1)
    assert res[-1] == "⚠ **nope** — do this" and len(res) == 3
    assert guard(1)(bad)(1) == "⚠ **nope** — do this"      # a lone output gets the bare value
    assert guard(2)(lambda a: [a, "ok"])(5) == [5, "ok"]


def test_markdown_in_messages_is_escaped():
    from lora_trainer.ui.common import error_text

    out = error_text(UserError("bad *name* [x](http://e)", ""))
    assert "\\*name\\*" in out and "\\[x]" in out


def test_loss_log_and_plot(tmp_path):
    from lora_trainer.ui import plots

    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": i, "loss": 1.0 / i}) for i in range(1, 30)] + ["{broken", json.dumps({"step": 30})]
    log.write_text("\n".join(lines), encoding="utf-8")
    pts = plots.read_log(log)
    assert len(pts) == 29 and pts[0] == (1, 1.0)
    assert plots.smooth([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    img = plots.loss_plot(pts)
    assert img.size[0] >= 600 and img.mode == "RGB"
    assert plots.loss_plot(pts[:1]) is None
    assert plots._pil([1, 2, 3], [3, 2, 1], [3, 2, 1], "t", (200, 100)).size == (200, 100)


def test_grid_layout(tmp_path):
    from PIL import Image

    from lora_trainer.ui import plots

    files = []
    for i, colour in enumerate(["red", "blue"]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (32, 32), colour).save(p)
        files.append(str(p))
    g = plots.compose_grid([[files[0], files[1]], [files[1], None]], ["lora-000001", "lora"], ["w 0.5", "w 1"],
                           cell=50)
    label_w = g.width - 2 * 50
    assert g.height == 22 + 2 * 50 and label_w >= 90
    assert g.getpixel((label_w + 25, 22 + 25)) == (255, 0, 0)          # row 0, column 0: red
    assert g.getpixel((label_w + 75, 22 + 25)) == (0, 0, 255)          # row 0, column 1: blue
    assert g.getpixel((label_w + 75, 22 + 75)) == (255, 255, 255)      # the empty cell


def test_grid_rows_in_training_order():
    from lora_trainer.ui.step_test import grid_order, lora_files

    assert grid_order(["zkw.safetensors", "zkw-step000004.safetensors", "zkw-000002.safetensors",
                       "zkw-step000001.safetensors"]) == ["zkw-step000001.safetensors", "zkw-000002.safetensors",
                                                          "zkw-step000004.safetensors", "zkw.safetensors"]
    assert lora_files(None, None) == []


def test_tooltip_data_survives_html_escaping():
    from lora_trainer.ui.tab import tooltips_html

    tips = {"lt-a": 'say "hi" & <b>', "lt-b": "中文"}
    out = tooltips_html(tips)
    m = re.search(r'data-tips="([^"]*)"', out)
    assert json.loads(html.unescape(m.group(1))) == tips


def test_scripts_and_styles_share_the_page_politely():
    """Every JS global is prefixed lora_trainer_; every CSS rule is scoped to #lt-… or .lt-…."""
    for js in (REPO / "javascript").glob("lora_trainer*.js"):
        src = js.read_text(encoding="utf-8")
        names = [a or b for a, b in re.findall(r"^(?:function\s+(\w+)|(?:var|let|const)\s+(\w+))", src, flags=re.M)]
        assert names and all(n.startswith("lora_trainer_") for n in names), (js.name, names)
    css = re.sub(r"/\*.*?\*/", "", (REPO / "style.css").read_text(encoding="utf-8"), flags=re.S)
    selectors = [s.strip() for block in re.findall(r"([^{}]+){", css) for s in block.split(",")]
    assert selectors and all(re.match(r"^[#.]lt-", s) for s in selectors), selectors


def test_tooltip_script_reads_the_element_the_tab_writes():
    src = (REPO / "javascript" / "lora_trainer.js").read_text(encoding="utf-8")
    assert "#lt-tooltip-data" in src and "data-tips" in src
    from lora_trainer.ui.tab import tooltips_html

    assert 'id="lt-tooltip-data"' in tooltips_html({})


def test_extensions_index_entry():
    """The fields and rules of the index's validate_entry (WEBUI_API.md §1.5)."""
    entry = json.loads((REPO / "index" / "lora-trainer.json").read_text(encoding="utf-8"))
    assert set(entry) >= {"name", "url", "description", "tags"}
    assert re.fullmatch(r"(https://[^ ]+?)(?:(?:\.git)$|$)", entry["url"])
    known = {"script", "localization", "tab", "dropdown", "ads", "installed", "training", "models", "UI related",
             "prompting", "editing", "manipulations", "online", "animation", "query", "science", "extras"}
    assert set(entry["tags"]) <= known and {"tab", "training"} <= set(entry["tags"]) and "installed" not in entry["tags"]


def test_no_localizations_folder_that_would_replace_a_users_pack():
    assert not (REPO / "localizations" / "zh_CN.json").exists()


def test_standalone_page_names_the_model_it_really_trains_on():
    from lora_trainer.toy import model as M
    from lora_trainer.ui.standalone import model_label

    assert model_label("models/sd15.safetensors") == "sd15.safetensors"
    assert ("stand-in" in model_label(None)) == (not M.available())
