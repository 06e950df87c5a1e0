"""Load an SD1.x / SD2.x model offline: a diffusers folder, or a single-file ``.safetensors`` checkpoint.

A single file is converted by diffusers with the project's OWN small config files (written below, never
fetched from the hub) and the CLIP vocabulary from a package registry (``toy.tokenizer``). The family is
read from the checkpoint's keys; v-prediction from the UNet's behaviour, the way the WebUI detects it
(``sd_models_config.is_using_v_parameterization_for_sd2``), unless the user says which.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from ..errors import UserError

# The family is read from the keys by the pure checker, which every face runs before loading.
from ..model_files import SDXL_KEY, TE_SD1_KEY, TE_SD2_KEY, UNET_ATTN2_K, check_base_model, detect_family  # noqa: F401

_SCHED = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
          "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
          "prediction_type": "epsilon"}
_VAE = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "act_fn": "silu", "sample_size": 512, "scaling_factor": 0.18215}
_UNET_COMMON = {"_class_name": "UNet2DConditionModel", "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
                "block_out_channels": [320, 640, 1280, 1280], "norm_num_groups": 32, "act_fn": "silu",
                "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "center_input_sample": False,
                "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "mid_block_scale_factor": 1,
                "norm_eps": 1e-5}
CONFIGS = {
    "sd1": {
        "unet": {**_UNET_COMMON, "sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8},
        "text_encoder": {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 768,
                         "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
                         "vocab_size": 49408, "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2,
                         "pad_token_id": 1, "torch_dtype": "float32"},
        "pad_token": "<|endoftext|>",
    },
    "sd2": {
        "unet": {**_UNET_COMMON, "sample_size": 96, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
                 "use_linear_projection": True},
        "text_encoder": {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 1024,
                         "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
                         "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 512,
                         "vocab_size": 49408, "layer_norm_eps": 1e-5, "bos_token_id": 0, "eos_token_id": 2,
                         "pad_token_id": 1, "torch_dtype": "float32"},
        "pad_token": "!",
    },
}


def write_config_folder(folder: Path, family: str, prediction_type: str) -> Path:
    """A diffusers-layout folder of configs (no weights) for ``from_single_file(config=…)``."""
    from ..toy.tokenizer import ensure_tokenizer_files

    c = CONFIGS[family]
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "model_index.json": {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.25.0",
                             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"],
                             "scheduler": ["diffusers", "DDIMScheduler"],
                             "safety_checker": [None, None], "feature_extractor": [None, None],
                             "requires_safety_checker": False},
        "unet/config.json": c["unet"], "vae/config.json": _VAE, "text_encoder/config.json": c["text_encoder"],
        "scheduler/scheduler_config.json": {**_SCHED, "prediction_type": prediction_type},
        "tokenizer/tokenizer_config.json": {"model_max_length": 77, "bos_token": "<|startoftext|>",
                                            "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                                            "pad_token": c["pad_token"], "do_lower_case": True,
                                            "tokenizer_class": "CLIPTokenizer"},
        "tokenizer/special_tokens_map.json": {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                              "unk_token": "<|endoftext|>", "pad_token": c["pad_token"]},
    }
    for rel, data in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tok = ensure_tokenizer_files()
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tok / name, folder / "tokenizer" / name)
    return folder


def is_v_prediction(unet, cross_dim: int) -> bool:
    """The WebUI's test: an eps model returns roughly its input at t=999; a v model returns about -x."""
    x = torch.ones((1, 4, 8, 8), dtype=next(unet.parameters()).dtype) * 0.5
    cond = torch.zeros((1, 77, cross_dim), dtype=x.dtype)
    with torch.no_grad():
        out = unet(x, torch.tensor([999]), encoder_hidden_states=cond).sample
    return float((out - x).mean()) < -1


def load_components(path: Path, prediction: str = "auto", config_dir: Optional[Path] = None) -> dict:
    """unet, vae, text_encoder, tokenizer, family, prediction_type, alphas_cumprod, name."""
    family = check_base_model(path)  # a missing, truncated, fake or pickle file: one line, nothing loaded
    if family == "diffusers":
        return _load_folder(path, prediction)
    from diffusers import StableDiffusionPipeline

    pred = "epsilon" if prediction in ("auto", "epsilon") else "v_prediction"
    if config_dir is None:
        from ..models import cache_dir

        config_dir = write_config_folder(cache_dir() / "model_configs" / f"{family}-{pred}", family, pred)
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config_dir), local_files_only=True,
                                                    safety_checker=None, requires_safety_checker=False)
    parts = _parts(pipe, family, path.stem)
    if prediction == "auto" and family == "sd2":
        cross = pipe.unet.config.cross_attention_dim
        if is_v_prediction(pipe.unet, cross):
            parts["prediction_type"] = "v_prediction"
            parts["family"] = "sd2-v"
    elif prediction == "v_prediction":
        parts["prediction_type"], parts["family"] = "v_prediction", "sd2-v" if family == "sd2" else family
    return parts


def _load_folder(path: Path, prediction: str) -> dict:
    from diffusers import StableDiffusionPipeline

    if not (path / "model_index.json").is_file():
        raise UserError(f"{path} is not a diffusers model folder (no model_index.json)",
                        "give the folder that holds unet/, vae/, text_encoder/, tokenizer/, scheduler/")
    pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    family = "sd2" if pipe.text_encoder.config.hidden_size == 1024 else "sd1"
    parts = _parts(pipe, family, path.name)
    sched_pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    pred = sched_pred if prediction == "auto" else prediction
    if pred == "v_prediction":
        parts["prediction_type"], parts["family"] = "v_prediction", "sd2-v" if family == "sd2" else family
    return parts


def _parts(pipe, family: str, name: str) -> dict:
    from .backend import scaled_linear_alphas_cumprod

    if len(pipe.tokenizer) != 49408:
        raise UserError(f"the tokenizer has {len(pipe.tokenizer)} tokens instead of CLIP's 49,408",
                        "the model folder's tokenizer files are incomplete; copy vocab.json and merges.txt there")
    sc = pipe.scheduler.config
    alphas = scaled_linear_alphas_cumprod(sc.get("num_train_timesteps", 1000), sc.get("beta_start", 0.00085),
                                          sc.get("beta_end", 0.012))
    return {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer,
            "family": family, "prediction_type": "epsilon", "alphas_cumprod": alphas, "name": name}
