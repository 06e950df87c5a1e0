"""kohya ⇄ diffusers ⇄ ldm name maps, table-tested both ways and checked against the real module trees."""

from __future__ import annotations

import pytest
import torch

from conftest import needs_diffusers
from ldm_models import sd15_ldm_unet_meta, tiny_ldm_unet_meta
from lora_trainer.training import names
from lora_trainer.training.names import (diffusers_to_ldm_unet, ldm_to_diffusers_unet, te_module_path, to_kohya,
                                         webui_compvis_name)

SD15 = dict(num_res_blocks=2, num_levels=4)
TINY = dict(num_res_blocks=1, num_levels=2)

# (ldm path, diffusers path, layout)
PAIRS = [
    ("input_blocks.0.0", "conv_in", SD15),
    ("time_embed.0", "time_embedding.linear_1", SD15),
    ("time_embed.2", "time_embedding.linear_2", SD15),
    ("out.0", "conv_norm_out", SD15),
    ("out.2", "conv_out", SD15),
    ("input_blocks.1.1.transformer_blocks.0.attn1.to_q", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", SD15),
    ("input_blocks.2.1.proj_in", "down_blocks.0.attentions.1.proj_in", SD15),
    ("input_blocks.4.1.transformer_blocks.0.attn2.to_out.0", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0", SD15),
    ("input_blocks.8.1.transformer_blocks.0.ff.net.0.proj", "down_blocks.2.attentions.1.transformer_blocks.0.ff.net.0.proj", SD15),
    ("input_blocks.1.0.in_layers.2", "down_blocks.0.resnets.0.conv1", SD15),
    ("input_blocks.1.0.in_layers.0", "down_blocks.0.resnets.0.norm1", SD15),
    ("input_blocks.4.0.skip_connection", "down_blocks.1.resnets.0.conv_shortcut", SD15),
    ("input_blocks.10.0.emb_layers.1", "down_blocks.3.resnets.0.time_emb_proj", SD15),
    ("input_blocks.11.0.out_layers.3", "down_blocks.3.resnets.1.conv2", SD15),
    ("input_blocks.11.0.out_layers.0", "down_blocks.3.resnets.1.norm2", SD15),
    ("input_blocks.3.0.op", "down_blocks.0.downsamplers.0.conv", SD15),
    ("input_blocks.9.0.op", "down_blocks.2.downsamplers.0.conv", SD15),
    ("middle_block.0.emb_layers.1", "mid_block.resnets.0.time_emb_proj", SD15),
    ("middle_block.1.transformer_blocks.0.ff.net.2", "mid_block.attentions.0.transformer_blocks.0.ff.net.2", SD15),
    ("middle_block.2.in_layers.2", "mid_block.resnets.1.conv1", SD15),
    ("output_blocks.0.0.in_layers.2", "up_blocks.0.resnets.0.conv1", SD15),
    ("output_blocks.2.0.skip_connection", "up_blocks.0.resnets.2.conv_shortcut", SD15),
    ("output_blocks.2.1.conv", "up_blocks.0.upsamplers.0.conv", SD15),       # deepest level: no transformer
    ("output_blocks.3.1.transformer_blocks.0.attn2.to_k", "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", SD15),
    ("output_blocks.5.2.conv", "up_blocks.1.upsamplers.0.conv", SD15),       # after resnet + transformer
    ("output_blocks.8.2.conv", "up_blocks.2.upsamplers.0.conv", SD15),
    ("output_blocks.9.0.out_layers.3", "up_blocks.3.resnets.0.conv2", SD15),
    ("output_blocks.11.1.proj_out", "up_blocks.3.attentions.2.proj_out", SD15),
    ("input_blocks.1.1.proj_in.weight", "down_blocks.0.attentions.0.proj_in.weight", SD15),  # state-dict keys too
    ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias", SD15),
    ("input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight", SD15),
    # tiny: 1 res block per level, 2 levels, transformer on level 0 only
    ("input_blocks.1.1.proj_in", "down_blocks.0.attentions.0.proj_in", TINY),
    ("input_blocks.2.0.op", "down_blocks.0.downsamplers.0.conv", TINY),
    ("input_blocks.3.0.in_layers.2", "down_blocks.1.resnets.0.conv1", TINY),
    ("middle_block.1.proj_out", "mid_block.attentions.0.proj_out", TINY),
    ("output_blocks.0.0.skip_connection", "up_blocks.0.resnets.0.conv_shortcut", TINY),
    ("output_blocks.1.1.conv", "up_blocks.0.upsamplers.0.conv", TINY),
    ("output_blocks.2.1.transformer_blocks.0.attn1.to_v", "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v", TINY),
    ("output_blocks.3.1.proj_out", "up_blocks.1.attentions.1.proj_out", TINY),
]


@pytest.mark.parametrize("ldm,diffusers,layout", PAIRS)
def test_pairs_both_ways(ldm, diffusers, layout):
    assert ldm_to_diffusers_unet(ldm, **layout) == diffusers
    attention = {0} if layout is TINY else None
    assert diffusers_to_ldm_unet(diffusers, **layout, attention_levels=attention) == ldm


@pytest.mark.parametrize("ldm,layout", [
    ("input_blocks.12.0.op", SD15),            # the deepest level has no downsampler
    ("input_blocks.13.0.in_layers.2", SD15),   # past the last level
    ("input_blocks.1.0.in_layers.1", SD15),    # SiLU: not a mapped resnet part
    ("output_blocks.11.2.conv", SD15),         # the shallowest up block has no upsampler
    ("output_blocks.12.0.in_layers.2", SD15),
    ("middle_block.3", SD15),
    ("input_blocks.4.0.op", TINY),
    ("something.else", SD15),
])
def test_ldm_paths_that_do_not_exist_give_none(ldm, layout):
    assert ldm_to_diffusers_unet(ldm, **layout) is None


@pytest.mark.parametrize("diffusers,layout", [
    ("down_blocks.3.downsamplers.0.conv", SD15),
    ("up_blocks.3.upsamplers.0.conv", SD15),
    ("down_blocks.0.attentions.2.proj_in", SD15),
    ("up_blocks.0.resnets.3.conv1", SD15),
    ("mid_block.attentions.1.proj_in", SD15),
    ("mid_block.resnets.2.conv1", SD15),
    ("down_blocks.4.resnets.0.conv1", SD15),
    ("down_blocks.0.resnets.0.nonsense", SD15),
    ("down_blocks.0.attentions.1.proj_in", TINY),
])
def test_diffusers_paths_that_do_not_exist_give_none(diffusers, layout):
    assert diffusers_to_ldm_unet(diffusers, **layout) is None


def test_bad_layout_is_refused():
    with pytest.raises(ValueError):
        ldm_to_diffusers_unet("input_blocks.1.1.proj_in", num_res_blocks=[2, 2], num_levels=2)


def test_to_kohya_and_te_module_path():
    assert names.UNET_PREFIX == "lora_unet" and names.TE_PREFIX == "lora_te"
    assert to_kohya("lora_unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q") == \
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert te_module_path("encoder.layers.0.self_attn.q_proj") == "text_model.encoder.layers.0.self_attn.q_proj"
    assert te_module_path("text_model.encoder.layers.0.mlp.fc1") == "text_model.encoder.layers.0.mlp.fc1"
    assert to_kohya("lora_te", te_module_path("encoder.layers.11.mlp.fc2")) == \
        "lora_te_text_model_encoder_layers_11_mlp_fc2"


def _unet_layout(unet):
    return dict(num_res_blocks=unet.num_res_blocks[0], num_levels=len(unet.channel_mult))


def _attention_levels(unet):
    return {lvl for lvl in range(len(unet.channel_mult)) if 2 ** lvl in unet.attention_resolutions}


def _shallow_attention_unet():
    """3 levels, a transformer on level 0 only: the upsampler of up block 1 then sits at ``.1``, not ``.2``."""
    return sd15_ldm_unet_meta(model_channels=32, channel_mult=[1, 2, 2], attention_resolutions=[1], num_heads=4,
                              context_dim=32)


@pytest.mark.parametrize("build", [sd15_ldm_unet_meta, tiny_ldm_unet_meta, _shallow_attention_unet],
                         ids=["sd15", "tiny", "attention-on-level-0-only"])
def test_every_ldm_unet_parameter_round_trips(build):
    """ldm -> diffusers -> ldm is the identity over every parameter (hence every module) of a real ldm UNet."""
    unet = build()
    layout, attn = _unet_layout(unet), _attention_levels(unet)
    keys = list(unet.state_dict())
    assert keys
    for key in keys:
        d = ldm_to_diffusers_unet(key, **layout)
        assert d is not None, key
        assert diffusers_to_ldm_unet(d, **layout, attention_levels=attn) == key
    converted = {ldm_to_diffusers_unet(k, **layout) for k in keys}
    assert len(converted) == len(keys)  # injective


def _diffusers_unet(tiny: bool):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        if tiny:
            return UNet2DConditionModel(
                sample_size=32, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                attention_head_dim=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        return UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)


@needs_diffusers
@pytest.mark.parametrize("tiny", [False, True], ids=["sd15", "tiny"])
def test_state_dicts_match_diffusers_key_for_key(tiny):
    """Checked against diffusers itself: every converted ldm key exists in diffusers with the same shape."""
    unet = tiny_ldm_unet_meta() if tiny else sd15_ldm_unet_meta()
    layout = _unet_layout(unet)
    ldm_sd = unet.state_dict()
    diff_sd = _diffusers_unet(tiny).state_dict()
    converted = {ldm_to_diffusers_unet(k, **layout): tuple(v.shape) for k, v in ldm_sd.items()}
    assert converted == {k: tuple(v.shape) for k, v in diff_sd.items()}


# --- what the WebUI's Lora loader does with our names -------------------------------------------------------------

@pytest.mark.parametrize("kohya,sd2,expected", [
    ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", False,
     "diffusion_model_input_blocks_1_1_transformer_blocks_0_attn1_to_q"),
    ("lora_unet_down_blocks_2_attentions_1_proj_in", False, "diffusion_model_input_blocks_8_1_proj_in"),
    ("lora_unet_down_blocks_1_resnets_0_conv_shortcut", False, "diffusion_model_input_blocks_4_0_skip_connection"),
    ("lora_unet_down_blocks_0_resnets_1_conv1", False, "diffusion_model_input_blocks_2_0_in_layers_2"),
    ("lora_unet_down_blocks_3_resnets_1_time_emb_proj", False, "diffusion_model_input_blocks_11_0_emb_layers_1"),
    ("lora_unet_down_blocks_1_downsamplers_0_conv", False, "diffusion_model_input_blocks_6_0_op"),
    ("lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2", False,
     "diffusion_model_middle_block_1_transformer_blocks_0_ff_net_2"),
    ("lora_unet_mid_block_resnets_1_conv2", False, "diffusion_model_middle_block_2_out_layers_3"),
    ("lora_unet_up_blocks_1_attentions_2_proj_out", False, "diffusion_model_output_blocks_5_1_proj_out"),
    ("lora_unet_up_blocks_3_resnets_0_conv1", False, "diffusion_model_output_blocks_9_0_in_layers_2"),
    ("lora_unet_up_blocks_0_upsamplers_0_conv", False, "diffusion_model_output_blocks_2_1_conv"),
    ("lora_unet_up_blocks_2_upsamplers_0_conv", False, "diffusion_model_output_blocks_8_2_conv"),
    ("lora_unet_conv_in", False, "diffusion_model_input_blocks_0_0"),
    ("lora_unet_conv_out", False, "diffusion_model_out_2"),
    ("lora_unet_time_embedding_linear_2", False, "diffusion_model_time_embed_2"),
    ("lora_te_text_model_encoder_layers_0_self_attn_q_proj", False,
     "transformer_text_model_encoder_layers_0_self_attn_q_proj"),
    ("lora_te_text_model_encoder_layers_11_mlp_fc2", False, "transformer_text_model_encoder_layers_11_mlp_fc2"),
    ("lora_te_text_model_encoder_layers_3_self_attn_out_proj", True, "model_transformer_resblocks_3_attn_out_proj"),
    ("lora_te_text_model_encoder_layers_3_mlp_fc1", True, "model_transformer_resblocks_3_mlp_c_fc"),
    ("lora_te_text_model_encoder_layers_3_mlp_fc2", True, "model_transformer_resblocks_3_mlp_c_proj"),
    ("lora_te2_text_model_encoder_layers_5_self_attn_k_proj", False, "1_model_transformer_resblocks_5_attn_k_proj"),
    ("lora_unet_input_blocks_1_1_proj_in", False, None),   # compvis-style: left to the WebUI's fallback
    ("something_else", False, None),
])
def test_webui_compvis_name_table(kohya, sd2, expected):
    assert webui_compvis_name(kohya, is_sd2=sd2) == expected


def _ldm_unet_targets(unet, conv):
    from lora_trainer.training.ldm_backend import ldm_unet_lora_targets

    by_module = {id(m): path for path, m in unet.named_modules()}
    return {k: by_module[id(m)] for k, m in ldm_unet_lora_targets(unet, conv=conv).items()}


def test_webui_maps_every_sd15_target_to_its_own_ldm_module():
    """On the SD1.5 layout the WebUI's fixed-factor rules land each of our 278 names on the very module."""
    targets = _ldm_unet_targets(sd15_ldm_unet_meta(), conv=True)
    assert len(targets) == 278
    for kohya, ldm_path in targets.items():
        assert webui_compvis_name(kohya) == "diffusion_model_" + ldm_path.replace(".", "_"), kohya


def test_webui_rules_assume_two_res_blocks():
    """Why the tiny test model has num_res_blocks=2: with 1, the WebUI would put names on the wrong modules."""
    targets = _ldm_unet_targets(tiny_ldm_unet_meta(num_res_blocks=1), conv=False)
    wrong = [k for k, p in targets.items() if webui_compvis_name(k) != "diffusion_model_" + p.replace(".", "_")]
    assert "lora_unet_up_blocks_1_attentions_0_proj_in" in wrong
    targets = _ldm_unet_targets(tiny_ldm_unet_meta(num_res_blocks=2), conv=True)
    assert all(webui_compvis_name(k) == "diffusion_model_" + p.replace(".", "_") for k, p in targets.items())
