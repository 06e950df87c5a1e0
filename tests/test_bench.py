"""The benchmark's row providers call each step's row function the way it is written (a plain ``bench`` ran
``prepare_rows(args)`` with the parsed arguments as its photo count)."""

from __future__ import annotations

import argparse


def test_bench_providers_call_each_row_function_as_it_expects(monkeypatch):
    from lora_trainer import bench, bench_prepare
    from lora_trainer.training import bench_features, lr_sweep

    calls = []
    monkeypatch.setattr(bench_prepare, "prepare_rows", lambda *a: calls.append(("prepare", a)) or [])
    monkeypatch.setattr(bench_features, "feature_rows", lambda *a: calls.append(("optimizers", a)) or [])
    monkeypatch.setattr(lr_sweep, "sweep_rows", lambda *a: calls.append(("lr-sweep", a)) or [])
    bench._optional_providers()
    ns = argparse.Namespace(device=None, quick=True)
    for name in ("prepare", "optimizers", "lr-sweep"):
        assert bench.ROW_PROVIDERS[name](ns) == []
    assert calls == [("prepare", ()), ("optimizers", (ns,)), ("lr-sweep", (ns,))]
