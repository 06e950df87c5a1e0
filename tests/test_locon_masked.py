"""LoCon: a file the trainer writes round-trips (save → load into a fresh network → same outputs) on both
backends, and the WebUI-style loader matches every key on the real ldm model and merges it into exactly the
function our attached network computes. Masked loss: where the mask is 0 the loss has zero gradient."""

from __future__ import annotations

import pytest
import torch

from test_training import make_backend  # noqa: F401 - the fixture: diffusers AND the real ldm backend


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models here: one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from lora_trainer.training.tiny import tiny_dataset

    root = tmp_path_factory.mktemp("locon-data")
    tiny_dataset(root, n=2, size=32, repeats=1)
    return root


def _cfg(**kw):
    from lora_trainer.config import toy_config

    return toy_config(**{"batch_size": 1, "rank": 4, "alpha": 2.0, "resolution": 32, "min_bucket_reso": 32,
                         "max_bucket_reso": 64, "optimizer": "AdamW", "unet_lr": 1e-2, "epochs": 2,
                         "save_fractions": [], "save_precision": "fp32", **kw})


def _outputs(be, net, seed=0):
    """UNet prediction and text conditioning with ``net`` attached, on fixed inputs."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 16, 16, generator=g)
    t = torch.tensor([100, 700])
    with torch.no_grad(), net.applied():
        cond = be.encode_text(["tok, red square", "tok, blue square"])
        return be.denoise(z, t, cond), cond


def _train_locon(be, data_dir, out):
    from lora_trainer.training import data as D
    from lora_trainer.training.loop import Trainer

    tr = Trainer(be, D.scan_dataset(data_dir, 1), _cfg(network="locon", conv_rank=3, conv_alpha=1.5), out, name="lc")
    res = tr.run()
    return tr, res


def test_locon_file_round_trips_into_a_fresh_network(make_backend, data_dir, tmp_path):
    from lora_trainer.training.network import LoRANetwork
    from lora_trainer.training.saving import read_lora

    be = make_backend()
    tr, res = _train_locon(be, data_dir, tmp_path)
    tensors, md = read_lora(res.output)
    conv3 = {k.split(".")[0] for k, v in tensors.items() if k.endswith("lora_down.weight") and v.dim() == 4
             and v.shape[-1] == 3}
    assert conv3, "a LoCon file carries 3x3 conv modules"
    assert all(tensors[f"{n}.lora_down.weight"].shape[0] == 3 for n in conv3)  # conv_rank
    assert all(float(tensors[f"{n}.alpha"]) == 1.5 for n in conv3)  # conv_alpha
    assert '"conv_dim": 3' in md.get("ss_network_args", "") and '"conv_alpha": 1.5' in md["ss_network_args"]
    assert any(tensors[f"{n}.lora_up.weight"].abs().max() > 0 for n in conv3)  # the conv parts were trained

    targets = {**be.lora_targets("unet", conv=True), **be.lora_targets("te")}
    fresh = LoRANetwork(targets, rank=4, alpha=2.0, conv_rank=3, conv_alpha=1.5)
    fresh.load_kohya(tensors)
    out_a, cond_a = _outputs(be, tr.network)
    out_b, cond_b = _outputs(be, fresh)
    assert torch.equal(out_a, out_b) and torch.equal(cond_a, cond_b)
    base_out, _ = _outputs(be, LoRANetwork({}, 1, 1.0))
    assert (out_a - base_out).abs().max() > 1e-4  # and the LoRA does change the model


def test_webui_loader_matches_every_locon_key_on_ldm_and_merges_the_same_function(data_dir, tmp_path):
    from ldm_models import tiny_latent_diffusion
    from webui_lora_loader import load_kohya_lora

    from lora_trainer.training.ldm_backend import LdmBackend
    from lora_trainer.training.network import LoRANetwork
    from lora_trainer.training.saving import read_lora

    model = tiny_latent_diffusion(seed=0)
    be = LdmBackend(model, name="tiny-ldm")
    tr, res = _train_locon(be, data_dir, tmp_path)
    tensors, _ = read_lora(res.output)
    merged, matched, unmatched = load_kohya_lora(model, res.output)
    assert unmatched == []
    assert matched == len({k.split(".")[0] for k in tensors}) == len(tr.network)
    ours, ours_cond = _outputs(be, tr.network)
    theirs, theirs_cond = _outputs(LdmBackend(merged), LoRANetwork({}, 1, 1.0))
    torch.testing.assert_close(theirs_cond, ours_cond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------- masked loss

@pytest.fixture()
def masked_dir(tmp_path):
    import numpy as np
    from PIL import Image

    from lora_trainer.training.tiny import tiny_dataset

    d = tiny_dataset(tmp_path / "masked", n=1, size=32, repeats=1)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255  # left half ignored
    Image.fromarray(mask, "L").save(d / "000.mask.png")
    return tmp_path / "masked"


@pytest.mark.parametrize("masked", [True, False])
def test_masked_loss_gives_zero_gradient_where_the_mask_is_zero(make_backend, masked_dir, tmp_path, masked):
    from lora_trainer.training import data as D
    from lora_trainer.training.backend import frozen
    from lora_trainer.training.loop import Trainer

    be = make_backend()
    scan = D.scan_dataset(masked_dir, 1)
    assert scan.items[0].mask is not None and scan.num_images == 1  # the mask is not an image of its own
    tr = Trainer(be, scan, _cfg(masked_loss=masked), tmp_path, name="m")
    tr.alphas = be.alphas_cumprod()
    tr.v_pred = False
    grads = []
    real = be.denoise

    def spy(x, t, c):
        out = real(x, t, c)
        out.register_hook(lambda g: grads.append(g.detach().clone()))
        return out

    with frozen(*be.modules().values()):
        tr._prepare_data()
        tr._prepare_network()
        be.denoise = spy
        try:
            with tr.network.applied():
                tr._step([0], False)
        finally:
            del be.denoise
    (g,) = grads
    assert g.shape[-1] == 16  # latent width of a 32 px image
    left, right = g[..., :8], g[..., 8:]
    assert right.abs().sum() > 0
    if masked:
        assert tr.masks[0] is not None and torch.count_nonzero(left) == 0
    else:
        assert tr.masks[0] is None and left.abs().sum() > 0


def test_flip_aug_trains_on_the_mirrored_image_and_mirrors_its_mask(make_backend, masked_dir, tmp_path):
    """``flip_aug``: each image is also encoded mirrored (not the latent flipped: the VAE is not symmetric),
    a coin flip from the run's seeded RNG picks one per step, and the mask is mirrored with it. The latent
    disk cache keeps the two apart. Off, nothing is encoded twice and no RNG draw is added."""
    from lora_trainer.training import data as D
    from lora_trainer.training.loop import Trainer

    be = make_backend()
    scan = D.scan_dataset(masked_dir, 1)
    seen = []
    real = be.encode_images

    def spy(px):
        seen.append(px.detach().clone())
        return real(px)

    be.encode_images = spy
    try:
        tr = Trainer(be, scan, _cfg(flip_aug=True, cache_latents_to_disk=True), tmp_path / "out",
                     job_dir=tmp_path / "job", name="f")
        tr._prepare_data()
        plain = Trainer(be, scan, _cfg(), tmp_path / "out2", name="p")
        plain._prepare_data()
    finally:
        del be.encode_images
    assert len(seen) == 3 and torch.equal(seen[1], seen[0].flip(-1)) and torch.equal(seen[2], seen[0])
    assert len(tr.latents) == len(tr.latents_flip) == 1 and len(plain.latents_flip) == 0
    assert not torch.equal(tr.latents_flip[0], tr.latents[0])
    assert len(list((tmp_path / "job" / "latents").glob("*.safetensors"))) == 2  # one file each
    mask = tr.masks[0]
    assert mask[..., 0].max() == 0 and mask[..., -1].min() == 1  # left half ignored
    tr.rng.random = lambda: 0.1  # heads: mirrored
    lat, masks = tr._batch([0])
    assert torch.equal(lat[0], tr.latents_flip[0]) and torch.equal(masks[0], mask.flip(-1))
    tr.rng.random = lambda: 0.9  # tails: as it is
    lat, masks = tr._batch([0])
    assert torch.equal(lat[0], tr.latents[0]) and masks[0] is mask
    state = plain.rng.getstate()
    plain._batch([0])
    assert plain.rng.getstate() == state
    # a whole run with it: finishes, and the file says so (kohya's ss_flip_aug)
    from lora_trainer.training.loop import train
    from lora_trainer.training.saving import read_lora

    res = train(be, masked_dir, _cfg(flip_aug=True), tmp_path / "run")
    assert res.steps == 2 and read_lora(res.output)[1]["ss_flip_aug"] == "True"
