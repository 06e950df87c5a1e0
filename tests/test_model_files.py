"""The pure model-file checker (``lora_trainer/model_files.py``) against files written by the real
safetensors library: whole files of every common dtype pass; cut, padded, re-typed or overlapping ones are
named with what is wrong. Stdlib only, so it runs in both CI profiles."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from conftest import needs_diffusers
from lora_trainer.errors import UserError
from lora_trainer.model_files import (TE_SD1_KEY, UNET_ATTN2_K, check_base_model, check_lora, read_header)


def _real(path, tensors, metadata=None):
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture()
def many(tmp_path):
    t = {"f16": torch.ones(3, 5, dtype=torch.float16), "bf16": torch.ones(7, dtype=torch.bfloat16),
         "f32": torch.ones(2, 2, 2), "i64": torch.arange(3), "b": torch.tensor([True, False]),
         "scalar": torch.tensor(1.5), "empty": torch.zeros(0, 4), "u8": torch.zeros(9, dtype=torch.uint8)}
    return _real(tmp_path / "many.safetensors", t, {"k": "v"})


def test_real_files_of_every_common_dtype_pass(many):
    info = read_header(many)
    assert info.shapes["f16"] == [3, 5] and info.shapes["scalar"] == [] and info.shapes["empty"] == [0, 4]
    assert info.metadata == {"k": "v"}


def _rewrite(path, edit):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


@pytest.mark.parametrize("damage,words", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1]), "is truncated"),
    (lambda p: p.write_bytes(p.read_bytes() + b"\0"), "1 bytes follow its last tensor"),
    (lambda p: p.write_bytes(p.read_bytes()[:20]), "is truncated: 20 bytes, cut off inside its"),
    (lambda p: _rewrite(p, lambda h: h["f16"].update(dtype="F17")), "unknown dtype 'F17'"),
    (lambda p: _rewrite(p, lambda h: h["f16"].update(shape=[3, 6])), "bytes for shape [3, 6]"),
    (lambda p: _rewrite(p, lambda h: h["f16"].update(data_offsets=[0, 30])), "gap or overlap"),
    (lambda p: _rewrite(p, lambda h: h["u8"].update(data_offsets=[9, 0])), "bad data offsets"),
    (lambda p: p.write_bytes(b"\xff" * 8 + p.read_bytes()[8:]), "not a .safetensors file"),
    (lambda p: p.write_bytes(p.read_bytes()[:8] + b"[" + p.read_bytes()[9:]), "not valid JSON"),
])
def test_damaged_files_are_named_with_what_is_wrong(many, damage, words):
    damage(many)
    with pytest.raises(UserError) as e:
        read_header(many, "--lora")
    assert words in str(e.value) and str(many) in e.value.message and e.value.hint


def test_lora_and_base_model_kinds(tmp_path):
    lora = _real(tmp_path / "amy.safetensors", {"lora_unet_x.lora_down.weight": torch.zeros(4, 8),
                                                 "lora_unet_x.lora_up.weight": torch.zeros(8, 4),
                                                 "lora_unet_x.alpha": torch.tensor(4.0)})
    sd1 = _real(tmp_path / "sd15.safetensors", {TE_SD1_KEY: torch.zeros(77, 8), UNET_ATTN2_K: torch.zeros(32, 768)})
    assert set(check_lora(lora).shapes) == {"lora_unet_x.lora_down.weight", "lora_unet_x.lora_up.weight",
                                            "lora_unet_x.alpha"}
    assert check_base_model(sd1) == "sd1"
    with pytest.raises(UserError, match="is a LoRA, not a base model"):
        check_base_model(lora)
    with pytest.raises(UserError, match="is a base model, not a LoRA"):
        check_lora(sd1)


def test_pickle_and_lfs_and_html_are_recognised(tmp_path):
    (tmp_path / "a.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 4\n")
    (tmp_path / "b.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    (tmp_path / "c.pt").write_bytes(b"\x80\x02")
    with pytest.raises(UserError, match="Git LFS pointer"):
        check_lora(tmp_path / "a.safetensors")
    with pytest.raises(UserError, match="pickle checkpoint .torch.save. under a .safetensors name"):
        check_base_model(tmp_path / "b.safetensors")
    with pytest.raises(UserError) as e:
        check_base_model(tmp_path / "c.pt")
    assert "pickle" in e.value.message and "2.6" in e.value.hint


@needs_diffusers
def test_a_saved_diffusers_folder_passes_and_a_cut_weight_file_is_named(tmp_path):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from tiny_sd import tiny_parts

    c = tiny_parts()
    StableDiffusionPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
                            scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(tmp_path / "m")
    assert check_base_model(tmp_path / "m") == "diffusers"
    w = next((tmp_path / "m" / "unet").glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(UserError) as e:
        check_base_model(tmp_path / "m")
    assert str(w) in e.value.message and "truncated" in e.value.message
