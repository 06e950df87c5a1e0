"""Our files in other loaders: diffusers' ``load_lora_weights`` reproduces our UNet and text-encoder outputs;
kohya's target counts on SD1.5-shaped models (diffusers module names, meta device)."""

from __future__ import annotations

import pytest
import torch

from conftest import needs_diffusers

pytestmark = needs_diffusers


def _trained_network(backend, scale=0.05):
    """A network with non-trivial random weights (as after training), attached to the backend's targets."""
    from lora_trainer.training.network import LoRANetwork

    targets = {**backend.lora_targets("unet"), **backend.lora_targets("te")}
    net = LoRANetwork(targets, rank=4, alpha=2.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net


def _outputs(backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([10, 700])
    ids = backend.tokenize(["tok, red square", "a blue circle"])
    with torch.no_grad():
        te = backend.text_encoder(ids)[0]
        unet = backend.unet(x, t, encoder_hidden_states=te).sample
    return te, unet


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_diffusers_load_lora_weights_reproduces_our_outputs(tmp_path, precision):
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from tiny_sd import tiny_backend

    from lora_trainer.training.saving import SAVE_DTYPES, save_lora

    be = tiny_backend()
    net = _trained_network(be)
    base_te, base_unet = _outputs(be)
    with net.applied():
        ours_te, ours_unet = _outputs(be)
    assert (ours_unet - base_unet).abs().max() > 1e-3  # the LoRA really changes the outputs
    save_lora(tmp_path / "x.safetensors", net.state_dict_kohya(SAVE_DTYPES[precision]),
              {"ss_network_module": "networks.lora"})
    pipe = StableDiffusionPipeline(vae=be.vae, text_encoder=be.text_encoder, tokenizer=be.tokenizer, unet=be.unet,
                                   scheduler=DDPMScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.load_lora_weights(str(tmp_path), weight_name="x.safetensors")
    try:
        theirs_te, theirs_unet = _outputs(be)
    finally:
        pipe.unload_lora_weights()
    if precision == "fp32":
        assert (theirs_te - ours_te).abs().max() <= 1e-5
        assert (theirs_unet - ours_unet).abs().max() <= 1e-5
    else:
        assert (theirs_te - ours_te).abs().max() <= 1e-3 * ours_te.abs().max()
        assert (theirs_unet - ours_unet).abs().max() <= 1e-3 * ours_unet.abs().max()
    te_after, unet_after = _outputs(be)
    assert torch.equal(te_after, base_te) and torch.equal(unet_after, base_unet)


SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def sd15_diffusers_meta():
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12, max_position_embeddings=77))
    return unet, te


def test_sd15_has_kohyas_192_unet_and_72_te_targets():
    from lora_trainer.training.diffusers_backend import select_te_targets, select_unet_targets

    unet, te = sd15_diffusers_meta()
    u, t = select_unet_targets(unet), select_te_targets(te)
    assert len(u) == 192 and len(t) == 72
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in u
    assert "lora_unet_up_blocks_3_attentions_2_proj_out" in u
    assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2" in u
    assert "lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_out_0" in u
    assert "lora_te_text_model_encoder_layers_11_mlp_fc2" in t
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in t
    assert len(select_unet_targets(unet, conv=True)) > 192


def test_metadata_says_what_the_model_predicts():
    """v-parameterisation follows the backend (the toy model is an SD1 that predicts v), else the family."""
    from lora_trainer.config import TrainConfig
    from lora_trainer.training.saving import build_metadata

    def md(**kw):
        m = build_metadata(TrainConfig(), model_name="m", output_name="o", resolution=(64, 64), num_images=1,
                           steps=1, epoch=1, started_at=0.0, **kw)
        return m["ss_v_parameterization"], m["modelspec.prediction_type"]

    assert md(family="sd1") == ("False", "epsilon")
    assert md(family="sd2-v") == ("True", "v")
    assert md(family="sd1", prediction_type="v_prediction") == ("True", "v")
    assert md(family="sd2", prediction_type="epsilon") == ("False", "epsilon")
