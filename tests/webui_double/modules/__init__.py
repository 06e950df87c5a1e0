# modules/__init__.py of the WebUI (empty there too). Kept import-free so loading the scripts entry stays light.
