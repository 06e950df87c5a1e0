"""The shared trained toy LoRA (INTERFACES.md §4): trained once per test session, used by every test that
needs a LoRA that really learned something.

Import the fixtures into a test module (``from conftest_toy import toy_backend, toy_lora  # noqa: F401``).
The LoRA is the demo's: 20 rendered stars as a phone folder, prepared, captions from the toy tagger with the trigger ``zkw``, the toy
preset through the training core, stopped after ``TEST_LORA_STEPS`` steps (tests train ≤ 20 steps).
"""

from __future__ import annotations

import pytest

TEST_LORA_STEPS = 20


@pytest.fixture(scope="session")
def toy_backend():
    """The embedded toy model (skips where diffusers or the weights are missing)."""
    from conftest import HAS_DIFFUSERS

    if not HAS_DIFFUSERS:
        pytest.skip("needs diffusers: the WebUI 1.10 host profile has none (INTERFACES.md §6)")
    from lora_trainer.toy import model as M

    if not M.available():
        pytest.skip(f"toy model weights missing: build them with python -m lora_trainer.toy.build ({M.WEIGHTS})")
    return M.backend()


@pytest.fixture(scope="session")
def toy_lora(toy_backend, tmp_path_factory):
    """A ``DemoRun`` after the demo's steps up to training (the LR probe left out: the toy preset's lr is
    the sweep's): ``.lora`` is the LoRA file."""
    from lora_trainer.toy import demo

    run = demo.DemoRun(tmp_path_factory.mktemp("toy_lora"), toy_backend, max_steps=TEST_LORA_STEPS,
                       say=lambda m: None)
    demo.prepare_dataset(run)
    demo.step_train(run)
    assert run.lora is not None and run.lora.is_file()
    return run
