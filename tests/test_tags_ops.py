"""Pure caption operations: one caption, filters, and a generated 100-caption folder with known counts."""

from __future__ import annotations

import random

import pytest

from lora_trainer.errors import UserError
from lora_trainer.tags import ops


@pytest.mark.parametrize("raw,key", [
    ("long_hair", "long hair"), ("Long  Hair", "long hair"), ("  smile ", "smile"), ("^_^", "^_^"),
    (">_<", ">_<"), ("hood_\\(clothing\\)", "hood (clothing)"), ("star_(symbol)", "star (symbol)"),
    ("6+girls", "6+girls"), (":d", ":d"), ("o_o", "o_o"),
])
def test_norm(raw, key):
    assert ops.norm(raw) == key


def test_parse_and_join():
    assert ops.parse_tags(" a, b ,,c\n, d e ") == ["a", "b", "c", "d e"]
    assert ops.join_tags(["a", "b c"]) == "a, b c"
    assert ops.as_list("x, y") == ["x", "y"] and ops.as_list([" x ", "", "y"]) == ["x", "y"]


def test_dedupe_keeps_first_place_and_spelling():
    assert ops.dedupe(["a", "long_hair", "b", "long hair", "A"]) == ["a", "long_hair", "b"]


def test_add_back_front_and_keep_tokens():
    tags = ["sks", "1girl", "smile"]
    assert ops.add(tags, "hat, smile", "back") == ["sks", "1girl", "smile", "hat"]
    assert ops.add(tags, ["hat"], "front") == ["hat", "sks", "1girl", "smile"]
    assert ops.add(tags, ["hat"], "front", keep_tokens=1) == ["sks", "hat", "1girl", "smile"]
    assert ops.add(tags, ["hat", "hat"], "front", keep_tokens=9) == ["sks", "1girl", "smile", "hat"]
    with pytest.raises(UserError):
        ops.add(tags, ["x"], "middle")


def test_remove_replace():
    tags = ["sks", "long_hair", "smile", "hat"]
    assert ops.remove(tags, "long hair, HAT") == ["sks", "smile"]
    assert ops.replace(tags, ["hat"], "beret") == ["sks", "long_hair", "smile", "beret"]
    # two olds merged into one new: the first place wins, no duplicate
    assert ops.replace(tags, "smile, hat", "grin") == ["sks", "long_hair", "grin"]
    # renaming onto an existing tag leaves one copy
    assert ops.replace(tags, ["hat"], "smile") == ["sks", "long_hair", "smile"]
    assert ops.replace(tags, ["absent"], "x") == tags
    assert ops.replace(tags, ["hat"], "") == ["sks", "long_hair", "smile"]


def test_move_honours_keep_tokens():
    tags = ["sks", "a", "b", "c"]
    assert ops.move(tags, "c", 0) == ["c", "sks", "a", "b"]
    assert ops.move(tags, "c", 0, keep_tokens=1) == ["sks", "c", "a", "b"]
    assert ops.move(tags, "a", 99) == ["sks", "b", "c", "a"]
    assert ops.move(tags, "zz", 0) == tags


def test_trigger_first_and_sort():
    assert ops.trigger_first(["a", "sks", "b"], "sks") == ["sks", "a", "b"]
    assert ops.trigger_first(["a", "b"], "sks") == ["sks", "a", "b"]
    assert ops.trigger_first(["a"], " ") == ["a"]
    assert ops.sort_tags(["sks", "c", "a", "b"], keep_tokens=1) == ["sks", "a", "b", "c"]
    assert ops.sort_tags(["sks", "c", "a", "b"], {"b": 0, "c": 1}, keep_tokens=1) == ["sks", "b", "c", "a"]


@pytest.mark.parametrize("expr,tags,want", [
    ("", ["x"], True),
    ("1girl", ["1girl", "smile"], True),
    ("1girl AND hat", ["1girl", "smile"], False),
    ("1girl, smile", ["1girl", "smile"], True),
    ("1girl AND NOT hat", ["1girl"], True),
    ("1girl AND NOT hat", ["1girl", "hat"], False),
    ("smile OR grin", ["grin"], True),
    ("1boy OR 1girl AND hat", ["1boy"], True),          # AND binds tighter than OR
    ("(1boy OR 1girl) AND hat", ["1boy"], False),
    ("NOT NOT hat", ["hat"], True),
    ("hood (clothing) AND NOT (hat OR beret)", ["hood_(clothing)"], True),
    ("hood (clothing) AND NOT (hat OR beret)", ["hood (clothing)", "beret"], False),
    ("long_hair", ["Long Hair"], True),
    ("black and white", ["black and white"], True),     # lower-case 'and' is part of the tag
    ("ORANGE hair OR x", ["orange hair"], True),         # 'OR' only as a whole word
])
def test_filter_expressions(expr, tags, want):
    assert ops.parse_filter(expr)(tags) is want


@pytest.mark.parametrize("expr", ["AND x", "x AND", "(x OR y", "x )", "NOT", "x OR OR y"])
def test_bad_filters_are_user_errors(expr):
    with pytest.raises(UserError) as ei:
        ops.parse_filter(expr)
    assert "filter" in ei.value.message and ei.value.hint


def test_make_filter_three_boxes():
    f = ops.make_filter(all_of="1girl", any_of=["smile", "grin"], none_of="hat")
    assert f(["1girl", "grin"]) and not f(["1girl"]) and not f(["1girl", "smile", "hat"])
    assert ops.make_filter()(["anything"])


# --------------------------------------------------------------------------------------------- 100 captions

EXTRA = ["sky", "tree", "book", "cup", "flower"]


def _generated() -> dict[str, list[str]]:
    """Image i's tags are fixed by simple rules on i; a seeded RNG only shuffles their order."""
    rng = random.Random(7)
    caps = {}
    for i in range(100):
        tags = ["1girl" if i % 2 == 0 else "1boy"]
        if i % 3 == 0:
            tags.append("smile")
        if i % 5 == 0:
            tags.append("hat")
        if i % 4 == 0:
            tags.append("long hair")
        if i % 7 == 0:
            tags.append("long_hair")      # the same tag spelled differently: a duplicate within the caption
        tags.append(EXTRA[i % 5])
        rng.shuffle(tags)
        caps[f"img{i:03d}.png"] = tags
    return caps


def _count(pred) -> int:
    return sum(1 for i in range(100) if pred(i))


def test_frequency_table_counts_and_shares():
    caps = _generated()
    rows = {r.key: r for r in ops.frequency(caps)}
    assert rows["1girl"].count == _count(lambda i: i % 2 == 0) == 50
    assert rows["smile"].count == _count(lambda i: i % 3 == 0) == 34
    assert rows["hat"].count == 20
    assert rows["long hair"].count == _count(lambda i: i % 4 == 0 or i % 7 == 0)
    assert rows["long hair"].tag == "long hair"   # most common spelling shown
    assert rows["sky"].count == 20 and rows["sky"].share == pytest.approx(0.2)
    counts = [r.count for r in ops.frequency(caps)]
    assert counts == sorted(counts, reverse=True)
    assert sum(1 for _ in ops.frequency(caps)) == 2 + 3 + 5
    sub = ops.select(caps, "1boy")
    rows_sub = {r.key: r for r in ops.frequency(caps, sub)}
    assert rows_sub["hat"].count == _count(lambda i: i % 2 == 1 and i % 5 == 0)
    assert rows_sub["hat"].share == pytest.approx(rows_sub["hat"].count / 50)


@pytest.mark.parametrize("expr,pred", [
    ("1girl AND smile", lambda i: i % 2 == 0 and i % 3 == 0),
    ("1girl AND NOT smile", lambda i: i % 2 == 0 and i % 3 != 0),
    ("smile OR hat", lambda i: i % 3 == 0 or i % 5 == 0),
    ("(smile OR hat) AND NOT long hair", lambda i: (i % 3 == 0 or i % 5 == 0) and not (i % 4 == 0 or i % 7 == 0)),
    ("NOT 1girl AND NOT 1boy", lambda i: False),
    ("sky OR tree", lambda i: i % 5 in (0, 1)),
])
def test_filters_on_generated_set(expr, pred):
    keys = ops.select(_generated(), expr)
    assert keys == [f"img{i:03d}.png" for i in range(100) if pred(i)]


def test_bulk_ops_on_generated_set():
    caps = _generated()
    sel = ops.select(caps, "1girl AND NOT hat")
    added = ops.bulk_add(caps, ["sks"], sel, position="front")
    assert sum(1 for v in added.values() if v[0] == "sks") == _count(lambda i: i % 2 == 0 and i % 5 != 0) == 40
    assert ops.changed_keys(caps, added) == sel
    removed = ops.bulk_remove(caps, ["smile", "hat"])
    assert len(ops.changed_keys(caps, removed)) == _count(lambda i: i % 3 == 0 or i % 5 == 0)
    assert not any("smile" in v or "hat" in v for v in removed.values())
    renamed = ops.bulk_replace(caps, ["long hair"], "very long hair")
    rows = {r.key: r.count for r in ops.frequency(renamed)}
    assert rows["very long hair"] == _count(lambda i: i % 4 == 0 or i % 7 == 0) and "long hair" not in rows
    # both spellings collapse into one tag: no caption holds it twice
    assert all(sum(t == "very long hair" for t in v) <= 1 for v in renamed.values())
    deduped = ops.bulk_dedupe(caps)
    assert len(ops.changed_keys(caps, deduped)) == _count(lambda i: i % 4 == 0 and i % 7 == 0)
    trig = ops.bulk_trigger_first(caps, "sks")
    assert all(v[0] == "sks" and v.count("sks") == 1 for v in trig.values())
    sorted_caps = ops.bulk_sort(trig, keep_tokens=1)
    assert all(v[0] == "sks" for v in sorted_caps.values())
    assert sorted_caps["img000.png"][1] == "1girl"   # the most frequent tag after the trigger
    assert caps == _generated()   # inputs untouched: the functions are pure
