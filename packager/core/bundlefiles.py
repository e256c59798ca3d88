"""The names of the two files every bundle holds beside the files it lists (pure).

A module of its own, importing nothing: ``packager verify`` needs these names to start
hashing a bundle, before the manifest's model (:mod:`packager.core.manifest`) is loaded.
"""

from __future__ import annotations

MANIFEST = "manifest.json"
SIGNATURE = "model.sig"
RESERVED = frozenset({MANIFEST, SIGNATURE})
# Neither is read past these sizes (the checks refuse anything larger).
MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 1 << 20
