"""The forecast before a run: the exact step count the trainer will run, minutes from measured warm-up steps on
the real backend, peak memory from the warm-up, and a warning when that does not fit what is free."""

from __future__ import annotations

import pytest
import torch

from test_training import make_backend  # noqa: F401 - the fixture: diffusers AND the real ldm backend


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models here: one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from PIL import Image

    from lora_trainer.training.tiny import tiny_dataset

    root = tmp_path_factory.mktemp("fc-data")
    d = tiny_dataset(root, n=3, size=32, repeats=3)
    Image.new("RGB", (48, 32), (200, 30, 30)).save(d / "wide.png")  # a second bucket: batches never mix them
    (d / "wide.txt").write_text("tok, red square", encoding="utf-8")
    return root


def _cfg(**kw):
    from lora_trainer.config import toy_config

    return toy_config(**{"batch_size": 2, "rank": 4, "alpha": 2.0, "resolution": 32, "min_bucket_reso": 16,
                         "max_bucket_reso": 64, "optimizer": "AdamW", "epochs": 3, **kw})


def test_forecast_matches_the_run_and_measures_time_and_memory(make_backend, data_dir, tmp_path):
    from tiny_sd import assert_base_unchanged, base_snapshot

    from lora_trainer.training import data as D
    from lora_trainer.training.forecast import forecast_run, format_forecast
    from lora_trainer.training.loop import Trainer, forecast
    from lora_trainer.workspace import leftover_temp_files

    be = make_backend()
    snap = base_snapshot(be)
    cfg = _cfg()
    scan = D.scan_dataset(data_dir, 1)
    fc = forecast_run(be, scan, cfg, warmup_steps=2)
    tr = Trainer(be, scan, cfg, tmp_path / "never", name="t")
    tr._prepare_data()
    assert fc["steps"] == tr.total  # what the loop will run: (ceil(9/2) + ceil(3/2)) × 3 epochs
    assert tr.total == (5 + 2) * 3 and forecast(cfg, scan.num_samples)["steps"] == 18  # the naive count is lower
    assert 0 < fc["seconds_per_step"] < 60
    assert fc["minutes"] == pytest.approx((fc["steps"] * fc["seconds_per_step"] + fc["cache_seconds"]) / 60)
    assert fc["extra_mb"] > 0 and fc["peak_mb"] > fc["extra_mb"] and fc["free_mb"] > 0
    assert fc["fits"] is True and fc["warning"] is None and fc["device"] == "cpu"
    assert f"{fc['steps']} steps" in format_forecast(fc)
    assert_base_unchanged(be, snap)
    assert not (tmp_path / "never").exists() and leftover_temp_files(tmp_path) == []


def test_warning_when_it_does_not_fit(make_backend, data_dir):
    from lora_trainer.training.forecast import forecast_run, format_forecast

    fc = forecast_run(make_backend(), data_dir, _cfg(), warmup_steps=1, free_mb=0.01)
    assert fc["fits"] is False
    assert "GiB" in fc["warning"] and "batch size" in fc["warning"] and "gradient checkpointing" in fc["warning"]
    assert "WARNING" in format_forecast(fc)


def test_gradient_checkpointing_is_used_then_restored(data_dir):
    from conftest import HAS_DIFFUSERS

    if not HAS_DIFFUSERS:
        pytest.skip("needs diffusers")
    from tiny_sd import tiny_backend

    from lora_trainer.training.forecast import forecast_run

    be = tiny_backend()
    seen = []
    real = be.unet.forward

    def spy(*a, **k):
        seen.append(be.unet.is_gradient_checkpointing)
        return real(*a, **k)

    be.unet.forward = spy
    try:
        forecast_run(be, data_dir, _cfg(gradient_checkpointing=True), warmup_steps=1)
    finally:
        del be.unet.forward
    assert seen and all(seen) and not be.unet.is_gradient_checkpointing


def test_host_peak_sees_a_temporary_allocation():
    from lora_trainer.training.forecast import HostPeak

    with HostPeak() as hp:
        x = torch.ones(40 * 2**20 // 4 * 4)  # 160 MiB, touched
        x += 1
        del x
    assert hp.peak_mb - hp.before_mb > 120


def test_flip_aug_doubles_the_latent_cache_in_the_memory_forecast():
    from types import SimpleNamespace

    import torch

    from lora_trainer.training.forecast import _latent_cache_mb

    def tr(flip):
        return SimpleNamespace(cfg=SimpleNamespace(cache_latents=True, flip_aug=flip),
                               latents=[torch.zeros(4, 8, 8)], bucket_of=[(64, 64)])

    buckets = [(64, 64), (64, 128)]
    one = _latent_cache_mb(tr(False), None, buckets)
    assert one == (4 * 8 * 8 * 4) * (1 + 2) / 2**20  # bytes of a 64² latent, times the buckets' area
    assert _latent_cache_mb(tr(True), None, buckets) == 2 * one


# --------------------------------------------------------------------------------------------- steady state

@pytest.mark.parametrize("times,sps,left_out", [
    # the case: the first steps of a process are many times the rest; the forecast uses the rest
    ([1.42, 0.9, 0.3, 0.06, 0.055, 0.057, 0.056, 0.055, 0.058, 0.056], 0.0567, 3),
    ([0.1] * 8, 0.1, 0),                                   # steady from the start: nothing left out
    ([0.5, 0.1, 0.1, 0.3, 0.1, 0.1, 0.1, 0.1], 0.1286, 1),  # a slow step later on still counts (a mean)
    ([2.0, 1.0], 1.0, 1),                                  # two steps: the first is the warm-up
    ([0.7], 0.7, 0),                                       # one step: all there is
])
def test_steady_seconds_leaves_out_the_slow_first_steps(times, sps, left_out):
    from lora_trainer.training.forecast import steady_seconds

    got, k = steady_seconds(times)
    assert k == left_out and got == pytest.approx(sps, rel=2e-3)
    assert got < sum(times) / len(times) or left_out == 0  # below the naive mean whenever a warm-up was seen


def test_forecast_reports_what_it_timed(make_backend, data_dir):
    from lora_trainer.training.forecast import forecast_run

    fc = forecast_run(make_backend(), data_dir, _cfg(), warmup_steps=2, budget_s=0.0)
    assert fc["timed_steps"] == 2 and 0 <= fc["warmup_left_out"] <= 1 and fc["first_step_seconds"] > 0
