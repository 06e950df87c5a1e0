"""The README states the recipe defaults as the code has them, and its commands exist."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_options_table_matches_the_dataclass():
    from lora_trainer.config import TrainConfig, markdown_table

    assert markdown_table(TrainConfig) in (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_first_command_is_demo_and_second_is_ci_run():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first = text.index("python -m lora_trainer demo --output-dir")
    assert first < text.index("bash .ci/run")
    assert (ROOT / ".ci" / "run").is_file()
