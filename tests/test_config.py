"""Config: recipe defaults, validation messages, files with a version, the toy preset."""

import json

import pytest

from lora_trainer.config import (CONFIG_VERSION, TOY_PRESET, TrainConfig, dump_toml, from_dict, load_file,
                                 sanitize_name, to_dict, toy_config, validate)
from lora_trainer.errors import UserError


def test_defaults_are_the_tutorial_recipe():
    c = TrainConfig()
    assert (c.rank, c.alpha, c.optimizer, c.lr_scheduler, c.warmup_steps) == (128, 64.0, "AdamW8bit",
                                                                                "constant_with_warmup", 0)
    assert (c.batch_size, c.resolution, c.repeats, c.epochs, c.seed, c.clip_skip) == (1, 512, 30, 1, 42, 1)
    assert c.enable_buckets and c.bucket_no_upscale and c.cache_latents and not c.shuffle_caption
    assert (c.bucket_step, c.min_bucket_reso, c.max_bucket_reso) == (64, 256, 1024)
    assert c.keep_tokens == 1 and c.caption_dropout_rate == 0 and c.noise_offset == 0 and c.min_snr_gamma == 0
    assert c.save_precision == "fp16" and c.save_fractions == [0.2, 0.4, 0.6, 0.8]
    assert c.te_lr() == pytest.approx(c.unet_lr / 10)
    assert c.train_unet and c.train_text_encoder


def test_every_field_has_help_and_one_line():
    import dataclasses

    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
        assert "\n" not in f.metadata["help"]


@pytest.mark.parametrize("data, needle", [
    ({"rnak": 8}, "did you mean 'rank'"),
    ({"rank": 0}, "below the minimum"),
    ({"rank": 5000}, "above the maximum"),
    ({"optimizer": "adamw8bit"}, "did you mean 'AdamW8bit'"),
    ({"rank": "eight"}, "not a valid int"),
    ({"name": "我的角色"}, "not a safe file name"),
    ({"train_unet": False, "train_text_encoder": False}, "nothing to train"),
    ({"min_bucket_reso": 2048, "max_bucket_reso": 1024}, "larger than"),
])
def test_validation_messages(data, needle):
    with pytest.raises(UserError) as e:
        from_dict(TrainConfig, data)
    assert needle in str(e.value)


def test_non_ascii_name_gets_a_sanitised_suggestion():
    with pytest.raises(UserError) as e:
        from_dict(TrainConfig, {"name": "Amélie photo"})
    assert "'Amelie_photo'" in str(e.value)
    assert sanitize_name("我的") == "lora"


def test_json_and_toml_roundtrip(tmp_path):
    cfg = from_dict(TrainConfig, {"rank": 16, "unet_lr": 3.64e-5, "shuffle_caption": True, "name": "Amy"})
    d = to_dict(cfg)
    assert d["version"] == CONFIG_VERSION
    (tmp_path / "c.json").write_text(json.dumps(d))
    (tmp_path / "c.toml").write_text(dump_toml(d))
    for f in ("c.json", "c.toml"):
        again = from_dict(TrainConfig, load_file(tmp_path / f))
        assert again == cfg


def test_newer_config_version_is_refused(tmp_path):
    with pytest.raises(UserError, match="newer"):
        from_dict(TrainConfig, {"version": CONFIG_VERSION + 1})


def test_bad_toml_is_a_user_error(tmp_path):
    (tmp_path / "bad.toml").write_text("rank = = 3")
    with pytest.raises(UserError, match="cannot parse"):
        load_file(tmp_path / "bad.toml")


def test_toy_preset_is_the_scaled_recipe():
    c = toy_config()
    assert (c.resolution, c.min_bucket_reso, c.max_bucket_reso, c.bucket_step) == (64, 32, 128, 8)
    assert (c.rank, c.alpha, c.repeats, c.epochs, c.batch_size) == (8, 4.0, 10, 2, 4)
    assert 20 * c.repeats * c.epochs // c.batch_size == 100
    validate(c)
    assert set(TOY_PRESET) <= {f for f in to_dict(c)}
