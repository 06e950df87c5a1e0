"""The toy world and what is built on it: the offline demo's stand-in for real photos and models.

- ``world``: procedural 64×64 scenes (one coloured shape on a background) and their tag captions;
- ``detector``: a deterministic judge of those scenes (shape, colour, background), no learning;
- ``tagger``: ``ToyTagger``, the detector behind the ``Tagger`` protocol (name ``"toy"``);
- ``tokenizer``: the real CLIP BPE tokenizer, built offline from a package-registry file.

Kept light on purpose: importing this package imports nothing; each module pulls only what it needs
(numpy and Pillow; transformers only when the tokenizer is loaded).
"""
