"""Real ldm models for tests: the classes the WebUI runs (OFFLINE.md "A real ldm model for the WebUI test double").

``stable-diffusion-sdkit==2.1.5`` (installed ``--no-deps``, test venvs only) ships the Stability-AI ``ldm``
package. In the host profile its imports are all real. In the standalone profile three imports used only
for training/logging do not exist (no torchvision, open_clip, pytorch_lightning there); we put minimal stubs
in ``sys.modules`` for exactly those, only while ldm is imported, and remove them again so that other
libraries' "is X installed?" checks in the same process are not fooled.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import io
import re
import sys
import types
import zlib
from typing import Iterator, Sequence

import torch
from torch import nn

_LDM_MODULES = (
    "ldm.util",
    "ldm.modules.diffusionmodules.openaimodel",
    "ldm.models.autoencoder",
    "ldm.models.diffusion.ddpm",
)  # not ldm.modules.encoders.modules: it needs T5 classes transformers 5 cannot import without sentencepiece

SD15_UNET = dict(image_size=32, in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                 num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True,
                 transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False)

TINY_CONTEXT_DIM = 32


def _stub_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # other libraries' find_spec() needs one
    mod.__dict__.update(attrs)
    return mod


class _LightningModuleStub(nn.Module):
    """Stands in for ``pytorch_lightning.LightningModule``: an nn.Module with the ``device`` ldm reads."""

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")


def _stubs_for(missing: Sequence[str]) -> dict[str, types.ModuleType]:
    stubs: dict[str, types.ModuleType] = {}
    if "torchvision" in missing:
        utils = _stub_module("torchvision.utils", make_grid=lambda *a, **k: None)
        stubs["torchvision"] = _stub_module("torchvision", utils=utils)
        stubs["torchvision.utils"] = utils
    if "open_clip" in missing:
        stubs["open_clip"] = _stub_module("open_clip")
    if "pytorch_lightning" in missing:
        dist = _stub_module("pytorch_lightning.utilities.distributed", rank_zero_only=lambda fn: fn)
        utilities = _stub_module("pytorch_lightning.utilities", distributed=dist)
        stubs["pytorch_lightning"] = _stub_module("pytorch_lightning", LightningModule=_LightningModuleStub,
                                                  utilities=utilities)
        stubs["pytorch_lightning.utilities"] = utilities
        stubs["pytorch_lightning.utilities.distributed"] = dist
    return stubs


@contextlib.contextmanager
def _temporary_modules(stubs: dict[str, types.ModuleType]) -> Iterator[None]:
    for name, mod in stubs.items():
        sys.modules.setdefault(name, mod)
    try:
        yield
    finally:
        for name, mod in stubs.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]


def import_ldm() -> dict[str, types.ModuleType]:
    """Import the ldm modules we use (real dependencies where they import, stubs where they do not)."""
    if all(name in sys.modules for name in _LDM_MODULES):
        return {name: sys.modules[name] for name in _LDM_MODULES}
    missing = []
    for name in ("torchvision", "open_clip", "pytorch_lightning"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - "does not import" for whatever reason is what we test
            missing.append(name)
    with _temporary_modules(_stubs_for(missing)), contextlib.redirect_stdout(io.StringIO()):
        return {name: importlib.import_module(name) for name in _LDM_MODULES}


def sd15_ldm_unet_meta(**overrides) -> nn.Module:
    """The real ldm ``UNetModel`` at SD1.5 shape, on the meta device (no memory, no init cost)."""
    openaimodel = import_ldm()["ldm.modules.diffusionmodules.openaimodel"]
    with torch.device("meta"):
        return openaimodel.UNetModel(**{**SD15_UNET, **overrides})


def tiny_ldm_unet_meta(num_res_blocks: int = 1) -> nn.Module:
    """A tiny real ldm UNet (channel_mult [1,2], attention on level 0 only) on the meta device."""
    return sd15_ldm_unet_meta(model_channels=32, channel_mult=[1, 2], attention_resolutions=[1],
                              num_res_blocks=num_res_blocks, num_heads=4, context_dim=TINY_CONTEXT_DIM)


# --- the text encoder, attached the way the WebUI exposes it ------------------------------------------------------

class WordHashTokenizer:
    """Deterministic stand-in for CLIP's tokenizer until ``lora_trainer.toy.tokenizer`` exists.

    Words hash (crc32) to ids below the BOS/EOS ids; output is BOS + words + EOS, padded with EOS to 77,
    called like a transformers tokenizer.
    """

    bos_token_id, eos_token_id, vocab_size = 49406, 49407, 49408

    def __len__(self) -> int:
        return self.vocab_size

    def encode_one(self, text: str, max_length: int = 77) -> list[int]:
        words = re.findall(r"\w+|[^\w\s]", text.lower())
        ids = [zlib.crc32(w.encode("utf-8")) % self.bos_token_id for w in words][: max_length - 2]
        ids = [self.bos_token_id, *ids, self.eos_token_id]
        return ids + [self.eos_token_id] * (max_length - len(ids))

    def __call__(self, texts, max_length: int = 77, return_tensors: str = "pt", **_ignored) -> dict:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return {"input_ids": torch.tensor([self.encode_one(t, max_length) for t in texts], dtype=torch.long)}


def make_tokenizer():
    """The project's real CLIP BPE tokenizer when it exists, else the word-hash stand-in."""
    try:
        from lora_trainer.toy.tokenizer import load_clip_tokenizer
    except ImportError:
        return WordHashTokenizer()
    tok = load_clip_tokenizer()
    assert len(tok) == 49408, "CLIP tokenizer must have 49,408 tokens (OFFLINE.md trap)"
    return tok


class TinyFrozenCLIPEmbedder(nn.Module):
    """Shaped like ldm's ``FrozenCLIPEmbedder``: ``.tokenizer``, ``.transformer`` (CLIPTextModel), ``.max_length``."""

    def __init__(self, transformer: nn.Module, tokenizer, max_length: int = 77):
        super().__init__()
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.max_length = max_length

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding="max_length",
                                return_tensors="pt")["input_ids"]
        device = self.transformer.get_input_embeddings().weight.device
        return self.transformer(input_ids=tokens.to(device)).last_hidden_state

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self(texts)


class WebUIStyleCondStage(nn.Module):
    """``sd_model.cond_stage_model`` as the WebUI's hijack exposes it: ``.wrapped`` is the ldm embedder."""

    def __init__(self, wrapped: nn.Module):
        super().__init__()
        self.wrapped = wrapped

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.wrapped(texts)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self(texts)


def tiny_clip_text_model(hidden: int = TINY_CONTEXT_DIM, layers: int = 2, heads: int = 4) -> nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                         num_attention_heads=heads, vocab_size=49408, max_position_embeddings=77,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPTextModel(cfg)


def sd15_clip_text_model_meta() -> nn.Module:
    """A CLIPTextModel at SD1.5's text-encoder size (768 wide, 12 layers) on the meta device."""
    with torch.device("meta"):
        return tiny_clip_text_model(hidden=768, layers=12, heads=12)


# --- the tiny LatentDiffusion ------------------------------------------------------------------------------------

def tiny_ldm_config(num_res_blocks: int = 2, parameterization: str = "eps"):
    """OFFLINE.md's tiny config. ``num_res_blocks`` defaults to 2, not 1: the WebUI's Lora loader hard-codes the
    SD1/SD2 layout (3 ldm blocks per diffusers block, WEBUI_API.md §6.2), so only with 2 do kohya names load into
    the right modules, as they do on every real SD1/SD2 checkpoint."""
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
        "params": {
            "linear_start": 0.00085, "linear_end": 0.012, "num_timesteps_cond": 1, "log_every_t": 200,
            "timesteps": 1000, "first_stage_key": "jpg", "cond_stage_key": "txt", "image_size": 32,
            "channels": 4, "cond_stage_trainable": False, "conditioning_key": "crossattn",
            "monitor": "val/loss_simple_ema", "scale_factor": 0.18215, "use_ema": False,
            "parameterization": parameterization,
            "unet_config": {
                "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                "params": {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
                           "attention_resolutions": [1], "num_res_blocks": num_res_blocks, "channel_mult": [1, 2],
                           "num_heads": 4, "use_spatial_transformer": True, "transformer_depth": 1,
                           "context_dim": TINY_CONTEXT_DIM, "use_checkpoint": False, "legacy": False},
            },
            "first_stage_config": {
                "target": "ldm.models.autoencoder.AutoencoderKL",
                "params": {"embed_dim": 4, "monitor": "val/rec_loss",
                           "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3,
                                        "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                                        "attn_resolutions": [], "dropout": 0.0},
                           "lossconfig": {"target": "torch.nn.Identity"}},
            },
            "cond_stage_config": {"target": "torch.nn.Identity"},
        },
    })


def _unzero(module: nn.Module, generator: torch.Generator, std: float = 0.02) -> int:
    """Give all-zero weights (ldm's ``zero_module`` output convs) small random values so gradients flow."""
    n = 0
    with torch.no_grad():
        for m in module.modules():
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor) and w.dim() > 1 and not torch.any(w):
                w.copy_(torch.randn(w.shape, generator=generator) * std)
                n += 1
    return n


def tiny_latent_diffusion(seed: int = 0, num_res_blocks: int = 2, parameterization: str = "eps") -> nn.Module:
    """A real ldm ``LatentDiffusion`` (~2 M params, CPU, float32, eval mode) with a tiny CLIP text encoder.

    ``model.cond_stage_model.wrapped.transformer`` is a transformers ``CLIPTextModel`` (32 wide, 2 layers) and
    ``.wrapped.tokenizer`` its tokenizer, so ``get_learned_conditioning(list[str])`` gives (B, 77, 32), as on the
    WebUI. The text encoder is frozen (``requires_grad`` False) as ldm's FrozenCLIPEmbedder is; UNet parameters
    keep ``requires_grad`` True, as they do inside the WebUI (WEBUI_API.md §3.2). The global RNG is untouched.
    """
    util = import_ldm()["ldm.util"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(io.StringIO()):
            model = util.instantiate_from_config(tiny_ldm_config(num_res_blocks, parameterization))
        te = tiny_clip_text_model()
    _unzero(model.model, torch.Generator().manual_seed(seed + 1))
    te.requires_grad_(False)
    te.eval()
    model.cond_stage_model = WebUIStyleCondStage(TinyFrozenCLIPEmbedder(te, make_tokenizer()))
    return model.eval()
