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


def test_readme_is_built_from_the_sections_and_its_pictures_exist():
    """README.md is docs/build_readme.py's output (every section in), and every picture it shows is in the repo."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("build_readme", ROOT / "docs" / "build_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text == mod.build(), "README.md is stale: run python docs/build_readme.py"
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert pictures, "the README shows the project's pictures"
    for link in pictures:
        assert (ROOT / link).is_file(), link
