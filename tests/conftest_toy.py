"""The shared trained toy LoRA (INTERFACES.md §4): trained once per test session, used by every test that
needs a LoRA that really learned something.

Import the fixtures into a test module (``from conftest_toy import toy_backend, toy_lora  # noqa: F401``).
The LoRA is the demo's: 20 rendered rings as a phone folder, prepared, captions from the toy tagger with the trigger
``zkw``, the toy preset through the training core, all of its ``TEST_LORA_STEPS`` = 100 steps (about 30 s on 2 cores):
the 80 %/10 % check needs a LoRA that learned. INTERFACES.md §4 keeps end-to-end flows in tests to ≤ 20 steps; this
one trained fixture is shared by the session instead.
"""

from __future__ import annotations

import pytest

def _preset_steps() -> int:
    """images × repeats × epochs ÷ batch of the demo's dataset under the toy preset (100)."""
    from lora_trainer.config import TOY_PRESET
    from lora_trainer.toy.demo import N_IMAGES

    return N_IMAGES * TOY_PRESET["repeats"] * TOY_PRESET["epochs"] // TOY_PRESET["batch_size"]


TEST_LORA_STEPS = _preset_steps()


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

    run = demo.DemoRun(tmp_path_factory.mktemp("toy_lora"), toy_backend, max_steps=0,  # the preset's own steps
                       say=lambda m: None)
    demo.prepare_dataset(run)
    demo.step_train(run)
    assert run.lora is not None and run.lora.is_file()
    return run
