"""Samples during training go through the real generator with the training network attached and land atomically
under ``samples/``; the optional TensorBoard log writes kohya's scalar names or says in one line why not."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from conftest import needs_diffusers


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models here: one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from lora_trainer.training.tiny import tiny_dataset

    root = tmp_path_factory.mktemp("sample-data")
    tiny_dataset(root, n=2, size=32, repeats=1)
    return root


class AttachedSpy:
    """Wraps a Generator and records, per call, whether LoRA forwards are attached to the UNet."""

    def __init__(self, inner, unet):
        self.inner, self.unet, self.attached = inner, unet, []

    def generate(self, prompts, **kw):
        assert kw.get("lora") is None  # the training network is already attached: never a file here
        self.attached.append(sum("forward" in m.__dict__ for m in self.unet.modules()))
        return self.inner.generate(prompts, **kw)


@needs_diffusers
def test_samples_during_training_use_the_attached_network(data_dir, tmp_path):
    from tiny_sd import tiny_backend

    from lora_trainer.config import toy_config
    from lora_trainer.generate import DiffusersGenerator
    from lora_trainer.training.loop import Callbacks, train
    from lora_trainer.training.samples import sampler_for
    from lora_trainer.workspace import leftover_temp_files

    be = tiny_backend()
    cfg = toy_config(batch_size=1, rank=4, alpha=4.0, resolution=32, min_bucket_reso=32, max_bucket_reso=64,
                     optimizer="AdamW", unet_lr=2e-2, epochs=2, save_fractions=[], sample_every_n_steps=2,
                     sample_prompts=["tok, red square"])
    spy = AttachedSpy(DiffusersGenerator(be), be.unet)
    sampler = sampler_for(cfg, spy, tmp_path / "job", seeds=(3,), steps=2)
    res = train(be, data_dir, cfg, tmp_path / "out", callbacks=Callbacks(on_sample=sampler))
    assert res.steps == 4
    names = sorted(p.name for p in (tmp_path / "job" / "samples").iterdir())
    assert names == ["step000002-0.png", "step000004-0.png"] and sampler.written
    n_lora = len([k for k in be.lora_targets("unet")])
    assert spy.attached == [n_lora, n_lora]  # every UNet target carried its LoRA while sampling
    assert sum("forward" in m.__dict__ for m in be.unet.modules()) == 0  # and nothing is left attached
    # The sample at step 4 is not the base model's image for the same seed.
    from PIL import Image

    with Image.open(tmp_path / "job" / "samples" / "step000004-0.png") as im:
        sample = np.asarray(im.convert("RGB"), dtype=np.int16)
    base = np.asarray(DiffusersGenerator(be).generate(["tok, red square"], seeds=[3], steps=2, size=32)[0],
                      dtype=np.int16)
    assert sample.shape == (32, 32, 3) and np.abs(sample - base).max() > 0
    assert leftover_temp_files(tmp_path) == []


def test_sampler_for_needs_prompts_and_a_schedule(tmp_path):
    from lora_trainer.config import toy_config
    from lora_trainer.training.samples import Sampler, sampler_for

    class Fake:
        def generate(self, prompts, **kw):
            raise AssertionError("not called")

    assert sampler_for(toy_config(sample_prompts=["a"]), Fake(), tmp_path) is None  # no schedule
    assert sampler_for(toy_config(sample_every_n_steps=5), Fake(), tmp_path) is None  # no prompts
    s = sampler_for(toy_config(sample_every_n_epochs=1, sample_prompts=["a", " "]), Fake(), tmp_path)
    assert isinstance(s, Sampler) and s.prompts == ["a"] and s.size == 64  # the toy preset's resolution


def test_sampler_names_files_by_step_and_index(tmp_path):
    from PIL import Image

    from lora_trainer.training.samples import Sampler

    class Colours:
        def generate(self, prompts, *, seeds, **kw):
            return [Image.new("RGB", (8, 8), (10 * i, 0, 0)) for i in range(len(prompts) * len(seeds))]

    s = Sampler(Colours(), tmp_path, ["a", "b"], seeds=(1, 2))
    paths = s(120, 3)
    assert [p.name for p in paths] == [f"step000120-{i}.png" for i in range(4)]
    with Image.open(paths[3]) as im:
        assert im.getpixel((0, 0)) == (30, 0, 0)


# --------------------------------------------------------------------------------------------- TensorBoard

def test_tensorboard_without_the_package_is_one_clear_line(tmp_path, monkeypatch, caplog):
    import sys

    from lora_trainer.training.tb import TensorBoardLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with caplog.at_level(logging.WARNING, logger="lora_trainer"):
        tb = TensorBoardLog(tmp_path)
    assert not tb.enabled and "pip install tensorboard" in tb.notice and "\n" not in tb.notice
    assert [r.getMessage() for r in caplog.records] == [tb.notice]
    tb({"step": 1, "loss": 0.5})  # a no-op, never an error
    tb.close()
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_event_files_have_kohyas_scalar_names(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lora_trainer.training.tb import TensorBoardLog

    tb = TensorBoardLog(tmp_path)
    assert tb.enabled, tb.notice
    for step in range(1, 4):
        tb({"step": step, "loss": 1.0 / step, "lr": 1.0, "d_lr": 1e-5 * step, "it_s": 2.0, "epoch": 1})
    tb({"step": 4, "loss": float("nan"), "lr": 1.0, "d_lr": None})  # non-finite and missing values are skipped
    tb.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/current", "lr/unet", "lr/d*lr", "speed/it_s"} <= tags
    d = [(e.step, e.value) for e in acc.Scalars("lr/d*lr")]
    assert [s for s, _ in d] == [1, 2, 3] and d[2][1] == pytest.approx(3e-5)
    assert [e.step for e in acc.Scalars("lr/unet")] == [1, 2, 3, 4]


# --------------------------------------------------------------------------------------------- a run's own hooks

@needs_diffusers
def test_a_run_draws_its_samples_through_the_generator_it_is_given(data_dir, tmp_path):
    """The front ends (CLI, Service) hand the Trainer a generator; the config's sample options do the rest."""
    from tiny_sd import tiny_backend

    from lora_trainer.config import toy_config
    from lora_trainer.training import data as D
    from lora_trainer.training.loop import Trainer

    be = tiny_backend()
    cfg = toy_config(batch_size=1, rank=4, alpha=4.0, resolution=32, min_bucket_reso=32, max_bucket_reso=64,
                     optimizer="AdamW", epochs=2, save_fractions=[], sample_every_n_epochs=1,
                     sample_prompts=["tok, red square"])

    class Recorder:
        def __init__(self):
            self.calls = []

        def generate(self, prompts, **kw):
            from PIL import Image

            self.calls.append((list(prompts), kw["size"], sum("forward" in m.__dict__ for m in be.unet.modules())))
            return [Image.new("RGB", (kw["size"],) * 2)] * (len(prompts) * len(kw["seeds"]))

    rec = Recorder()
    Trainer(be, D.scan_dataset(data_dir, 1), cfg, tmp_path / "out", job_dir=tmp_path / "job", generator=rec).run()
    assert [c[:2] for c in rec.calls] == [(["tok, red square"], 32)] * 2  # once per epoch, at the run's size
    assert all(c[2] > 0 for c in rec.calls)  # with the training network attached
    assert sorted(p.name for p in (tmp_path / "job" / "samples").iterdir()) == ["step000002-0.png", "step000004-0.png"]


@needs_diffusers
def test_tensorboard_option_writes_events_or_warns_once(data_dir, tmp_path, monkeypatch):
    from tiny_sd import tiny_backend

    from lora_trainer.config import toy_config
    from lora_trainer.training import data as D
    from lora_trainer.training.loop import Callbacks, Trainer

    be = tiny_backend()
    cfg = toy_config(batch_size=1, rank=4, alpha=4.0, resolution=32, min_bucket_reso=32, max_bucket_reso=64,
                     optimizer="AdamW", epochs=1, save_fractions=[], tensorboard=True, sync_every=1)
    logged = []
    res = Trainer(be, D.scan_dataset(data_dir, 1), cfg, tmp_path / "out", Callbacks(on_log=logged.append),
                  job_dir=tmp_path / "job").run()
    assert [r["step"] for r in logged] == [1, 2]  # the user's own log callback still gets every record
    if importlib.util.find_spec("tensorboard") is None:
        assert len(res.warnings) == 1 and "pip install tensorboard" in res.warnings[0]
        assert not (tmp_path / "job" / "tensorboard").exists()
    else:
        assert list((tmp_path / "job" / "tensorboard").glob("events.out.tfevents.*")) and not res.warnings


@needs_diffusers
def test_keep_last_n_saves_deletes_older_intermediate_files(data_dir, tmp_path):
    from tiny_sd import tiny_backend

    from lora_trainer.config import toy_config
    from lora_trainer.training.loop import train

    be = tiny_backend()
    cfg = toy_config(batch_size=1, rank=4, alpha=4.0, resolution=32, min_bucket_reso=32, max_bucket_reso=64,
                     optimizer="AdamW", epochs=4, save_fractions=[0.25, 0.5, 0.75], keep_last_n_saves=2,
                     name="keep")
    res = train(be, data_dir, cfg, tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert files == ["keep-step000004.safetensors", "keep-step000006.safetensors", "keep.safetensors"]
    assert sorted(p.name for p in res.saved) == files


def test_compile_wraps_denoise_for_the_run_only():
    import torch

    from lora_trainer.training.loop import compiled_denoise

    class Backend:
        def denoise(self, x, t, c):
            return x

    be = Backend()
    with compiled_denoise(be):
        assert "denoise" in be.__dict__ and be.denoise is not None
    assert "denoise" not in be.__dict__ and be.denoise.__func__ is Backend.denoise
    assert torch.equal(be.denoise(torch.ones(1), 0, None), torch.ones(1))


@needs_diffusers
def test_test_images_take_a_sampler_by_the_webui_name():
    """Each standalone sampler is a real diffusers scheduler: deterministic per seed, and a different sampler
    draws a different image from the same seed; an unknown name is refused with the choices."""
    from tiny_sd import tiny_backend

    from lora_trainer.errors import UserError
    from lora_trainer.generate import DEFAULT_SAMPLER, SAMPLERS, DiffusersGenerator

    be = tiny_backend()
    gen = DiffusersGenerator(be)
    draw = {name: np.asarray(gen.generate(["tok, red square"], seeds=[5], steps=3, size=32, sampler=name)[0],
                             dtype=np.int16) for name in ("Euler", "Euler a", "DPM++ 2M", "DDIM")}
    again = np.asarray(gen.generate(["tok, red square"], seeds=[5], steps=3, size=32)[0], dtype=np.int16)
    assert DEFAULT_SAMPLER == "Euler" and np.array_equal(again, draw["Euler"])  # None: the default
    assert type(gen.pipeline("Euler a").scheduler).__name__ == SAMPLERS["Euler a"][0]
    names = list(draw)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(draw[a] - draw[b]).max() > 0, (a, b)
    with pytest.raises(UserError, match="unknown sampler 'k_lms'") as e:
        gen.generate(["x"], seeds=[1], steps=2, size=32, sampler="k_lms")
    assert "Euler a" in e.value.hint
