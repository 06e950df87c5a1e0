"""modules/paths.py: re-exports paths_internal's folders and ``paths`` (the cloned repositories, e.g. BLIP)."""

from modules.paths_internal import data_path, models_path, script_path  # noqa: F401

paths = {}  # "BLIP" -> repositories/BLIP etc.; the fixture fills it
