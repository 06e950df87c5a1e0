"""modules/paths_internal.py: where user data and models live (``--data-dir``, ``--models-dir``).

The fixture points these at a temporary folder before anything reads them.
"""

import os

script_path = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
default_output_dir = os.path.join(data_path, "outputs")
