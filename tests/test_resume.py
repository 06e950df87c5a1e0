"""Resume: a run killed with SIGKILL and resumed ends at the same weights as an uninterrupted run; the saved
state holds no pickle and nothing half-written is ever visible under a final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import needs_diffusers


def _weights(path):
    from lora_trainer.training.saving import read_lora

    return read_lora(path)[0]


def test_state_roundtrip_of_nested_optimizer_state():
    from lora_trainer.training.state import flatten, unflatten

    obj = {"state": {0: {"step": 3, "growth": float("inf"), "q": {"absmax": torch.ones(2), "shape": (2, 3)}}},
           "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0], "t": None}]}
    tensors: dict = {}
    flat = json.loads(json.dumps(flatten(obj, tensors)))
    back = unflatten(flat, tensors)
    assert back["state"][0]["q"]["shape"] == (2, 3) and back["param_groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(back["state"][0]["q"]["absmax"], torch.ones(2)) and 0 in back["state"]
    assert back["state"][0]["growth"] == float("inf")


def test_state_stores_a_shared_tensor_once_and_shares_it_again(tmp_path):
    """bitsandbytes' 8-bit AdamW keeps one quantisation map for many parameters' states: safetensors refuses
    tensors that share memory, so the state stores it once; views of stored storage are copied."""
    from safetensors.torch import load_file, save_file

    from lora_trainer.training.state import flatten, unflatten

    qmap = torch.linspace(-1, 1, 256)
    base = torch.arange(8.0)
    obj = {"state": {0: {"qmap1": qmap, "s": torch.ones(3)}, 1: {"qmap1": qmap, "s": torch.zeros(3)}},
           "view": base[2:6], "base": base}
    tensors: dict = {}
    flat = json.loads(json.dumps(flatten(obj, tensors)))
    save_file(tensors, str(tmp_path / "s.safetensors"))          # raised "Some tensors share memory" before
    back = unflatten(flat, load_file(str(tmp_path / "s.safetensors")))
    assert back["state"][0]["qmap1"] is back["state"][1]["qmap1"] and torch.equal(back["state"][1]["qmap1"], qmap)
    assert torch.equal(back["view"], base[2:6]) and torch.equal(back["base"], base)


def test_adamw8bit_state_saves_and_restores_where_bitsandbytes_runs(tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    from lora_trainer.training.state import latest_state, load_state, save_state

    def make():  # two weights of 8192: 8-bit states sharing their quantisation maps (small tensors keep fp32)
        return torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.Linear(64, 128))

    net = make()
    opt = bnb.optim.AdamW8bit(net.parameters(), lr=1e-3)
    try:
        net(torch.randn(4, 128)).square().mean().backward()
        opt.step()
    except Exception as exc:  # noqa: BLE001 - e.g. bitsandbytes 0.45 on CPU (the trainer falls back to AdamW)
        pytest.skip(f"AdamW8bit does not step here: {type(exc).__name__}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    gen, rng = torch.Generator().manual_seed(1), __import__("random").Random(1)
    save_state(tmp_path, step=1, epoch=1, batch_index=1, micro=1, network=net, optimizer=opt, scheduler=sched,
               scaler=None, gen=gen, rng=rng)
    net2 = make()
    opt2 = bnb.optim.AdamW8bit(net2.parameters(), lr=1e-3)
    load_state(latest_state(tmp_path), network=net2, optimizer=opt2, scheduler=sched, scaler=None, gen=gen, rng=rng)
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys() and a
    for k in a:
        assert a[k].keys() == b[k].keys()
        for name, v in a[k].items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v.cpu(), b[k][name].cpu()), (k, name)


@pytest.mark.parametrize("optimizer,stop_at,flip", [("AdamW", 4, False), ("DAdaptAdam", 4, False), ("AdamW", 3, False),
                                                    ("AdamW", 4, True)])
def test_cancel_then_resume_equals_uninterrupted_in_process(tmp_path, optimizer, stop_at, flip):
    """Cancelled mid-epoch (step 4 of 9) and right after an epoch's last batch (step 3: 3 steps an epoch);
    with flip_aug, the resumed run mirrors the same images at the same steps."""
    pytest.importorskip("dadaptation") if optimizer == "DAdaptAdam" else None
    from ldm_models import tiny_latent_diffusion

    from lora_trainer.config import toy_config
    from lora_trainer.training import data as D
    from lora_trainer.training.ldm_backend import LdmBackend
    from lora_trainer.training.loop import Callbacks, Trainer
    from lora_trainer.training.tiny import tiny_dataset

    tiny_dataset(tmp_path / "data", n=3, repeats=2, name="r")
    be = LdmBackend(tiny_latent_diffusion(seed=0))
    scan = D.scan_dataset(tmp_path / "data", 1)
    lr = 1.0 if optimizer == "DAdaptAdam" else 1e-3
    cfg = toy_config(optimizer=optimizer, unet_lr=lr, epochs=3, batch_size=2, save_fractions=[], sync_every=1,
                     shuffle_caption=True, caption_dropout_rate=0.3, flip_aug=flip)
    full = Trainer(be, scan, cfg, tmp_path / "full", job_dir=tmp_path / "jf", name="r").run()
    steps = []
    cb = Callbacks(on_log=lambda r: steps.append(r["step"]))
    part = Trainer(be, scan, cfg, tmp_path / "part", cb, should_stop=lambda: len(steps) >= stop_at,
                   job_dir=tmp_path / "jp", name="r").run()
    assert part.cancelled and part.steps == stop_at < full.steps
    resumed = Trainer(be, scan, cfg, tmp_path / "part", job_dir=tmp_path / "jp", name="r", resume=True).run()
    assert resumed.steps == full.steps and not resumed.cancelled
    a, b = _weights(full.output), _weights(resumed.output)
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-4


@needs_diffusers
def test_kill_9_and_resume_from_the_cli_equals_uninterrupted(tmp_path):
    from lora_trainer.training.tiny import tiny_dataset
    from lora_trainer.workspace import leftover_temp_files

    tiny_dataset(tmp_path / "data", n=2, repeats=4, name="k")
    env = {**os.environ, "LORA_TRAINER_LOG": str(tmp_path / "log.txt")}
    base = [sys.executable, "-m", "lora_trainer", "train", "--data", str(tmp_path / "data"), "--epochs", "3",
            "--batch-size", "1", "--optimizer", "AdamW", "--save-precision", "fp32", "--save-fractions", "0.5",
            "--save-state-every-n-steps", "2", "--sync-every", "1"]
    r = subprocess.run(base + ["--output-dir", str(tmp_path / "full")], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    proc = subprocess.Popen(base + ["--output-dir", str(tmp_path / "killed")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    job_dir = None
    while time.time() < deadline:
        latest = list((tmp_path / "killed" / "jobs").glob("*/state/latest.json"))
        if latest and json.loads(latest[0].read_text())["step"] >= 6:
            job_dir = latest[0].parent.parent
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert job_dir is not None, "the run never saved state"
    assert json.loads((job_dir / "state.json").read_text())["status"] == "running"  # it died mid-run
    assert not (tmp_path / "killed" / "k.safetensors").exists()
    r = subprocess.run([sys.executable, "-m", "lora_trainer", "train", "--resume", str(job_dir)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    a, b = _weights(tmp_path / "full" / "k.safetensors"), _weights(tmp_path / "killed" / "k.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-4
    assert json.loads((job_dir / "state.json").read_text())["status"] == "finished"
    # Temp files a SIGKILL may leave are hidden names, never final ones; finished files are all readable.
    for f in (tmp_path / "killed").rglob("*.safetensors"):
        if f not in leftover_temp_files(tmp_path / "killed"):
            _weights(f) if "state" not in f.parts else None
