"""Step 4, edit tags: caption store (load/save/undo), bulk operations, cleanup rules, 简体中文 dictionary.

``store`` keeps a folder's captions with undo/redo and saves them crash-safely; ``ops`` holds the pure
edits, filters and frequency table; ``rules`` makes cleanup suggestions from the tables in ``data/rules``;
``translate`` maps tags to Chinese; ``cleanup.cleanup_folder`` applies the suggestions in one call.
Nothing here imports torch or gradio.
"""
