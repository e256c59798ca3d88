"""A hostile registry: writes OCI image layouts serving whatever bytes a test wants.

The embedded registry refuses to publish inconsistent bundles, so tests that play
a compromised registry or publisher write the layout here, the way an attacker
with write access to the registry's storage could.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from packager.registry.artifact import ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, layer_media_type
from packager.registry.memory import MemoryRegistry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ROLES = {
    "manifest.json": None,
    "model.sig": None,
    "model.onnx": "model",
    "testvectors.npz": "testvectors",
}


class _LayoutTarget:
    """Writes straight into the files of an OCI image layout under ``root``."""

    def __init__(self, root: Path, name: str) -> None:
        self.layout = root / name
        self.layout.mkdir(parents=True, exist_ok=True)
        (self.layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        blobs = self.layout / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    def tag(self, tag: str, entry: dict[str, object]) -> None:
        index_path = self.layout / "index.json"
        index = (
            json.loads(index_path.read_text())
            if index_path.exists()
            else {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [],
            }
        )
        index["manifests"] = [
            m
            for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
        ] + [{**entry, "annotations": {"org.opencontainers.image.ref.name": tag}}]
        index_path.write_text(json.dumps(index))


class _MemoryTarget:
    """Stores through the hooks of an in-memory registry."""

    def __init__(self, registry: MemoryRegistry, name: str) -> None:
        self.registry = registry
        self.name = name

    def blob(self, data: bytes) -> dict[str, object]:
        return {"digest": str(self.registry.put_blob(data)), "size": len(data)}

    def tag(self, tag: str, entry: dict[str, object]) -> None:
        self.registry.set_tag(self.name, tag, entry)


def serve_files(
    target: Path | MemoryRegistry, name: str, tag: str, files: Mapping[str, bytes]
) -> None:
    """Tag ``name:tag`` as an artifact holding exactly ``files``, in the layout under the
    directory ``target`` or in the in-memory registry ``target``."""
    store = _LayoutTarget(target, name) if isinstance(target, Path) else _MemoryTarget(target, name)
    layers = []
    for path, data in sorted(files.items()):
        layers.append(
            {
                "mediaType": layer_media_type(path, ROLES.get(path, "doc")),
                **store.blob(data),
                "annotations": {
                    "org.opencontainers.image.title": path,
                    "org.cncf.model.filepath": path,
                },
            }
        )
    config = json.dumps(
        {
            "descriptor": {"name": name, "version": tag},
            "config": {"format": "onnx"},
            "modelfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, **store.blob(config)},
            "layers": layers,
            "annotations": {"org.opencontainers.image.version": tag},
        }
    ).encode()
    store.tag(tag, {"mediaType": OCI_MANIFEST, **store.blob(manifest)})


def serve_bundle_dir(root: Path, bundle: Path, *, name: str, tag: str) -> None:
    """Serve every regular file of a (possibly tampered) bundle directory as ``name:tag``."""
    files = {p.name: p.read_bytes() for p in sorted(bundle.iterdir()) if p.is_file()}
    serve_files(root, name, tag, files)
