"""The OCI image index (``index.json``) of a registry directory, an archive or a mirror.

Read in one place, :func:`parse_index`, for every kind that keeps one: the embedded
directory (one index per model), its static mirrors, archives (one index for all models,
references ``<name>:<tag>``) and the in-memory registry of the tests.

An index that cannot be parsed is unreadable (:class:`RegistryError`, exit 4). An index
that contradicts itself, one reference listed more than once, is a lie that lets two
readers install different things under one name: :class:`TamperedError` (exit 3), like
every other answer of a registry that is not what it must be. The rule holds even when
the entries are identical: no tool packager writes with ever lists a reference twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from packager.core.jsonio import Limits, loads_object
from packager.core.manifest import dump_json
from packager.core.text import printable
from packager.errors import RegistryError, TamperedError
from packager.registry.artifact import ARTIFACT_TYPE, OCI_MANIFEST_MEDIA_TYPE, parse_descriptor
from packager.registry.base import Descriptor

OCI_LAYOUT = "oci-layout"
INDEX = "index.json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = dump_json({"imageLayoutVersion": "1.0.0"})
# Thousands of versions fit in well under a MiB; anything near this is not an index.
MAX_INDEX_BYTES = 16 << 20
_LIMITS = Limits(max_bytes=MAX_INDEX_BYTES)

Entry = Mapping[str, Any]


def ref_name(entry: Entry) -> str | None:
    """The ``org.opencontainers.image.ref.name`` of an index entry, if it has one."""
    annotations = entry.get("annotations")
    ref = annotations.get(REF_NAME_ANNOTATION) if isinstance(annotations, Mapping) else None
    return ref if isinstance(ref, str) else None


@dataclass(frozen=True)
class OciIndex:
    """The manifest descriptors of an index, verbatim, and each reference's one entry."""

    entries: tuple[Entry, ...]
    refs: Mapping[str, Entry]
    where: str

    def descriptor(self, ref: str) -> Descriptor | None:
        """The OCI manifest descriptor ``ref`` names, or None when it names none.

        Raises:
            TamperedError: the entry is malformed or not an OCI image manifest.
        """
        entry = self.refs.get(ref)
        if entry is None:
            return None
        desc = parse_descriptor(dict(entry), where=self.where)
        if desc.media_type != OCI_MANIFEST_MEDIA_TYPE:
            raise TamperedError(
                f"{self.where}: {ref} is a {printable(desc.media_type)}, not an OCI manifest"
            )
        return desc


EMPTY_INDEX = OciIndex((), MappingProxyType({}), "an empty index")


def parse_index(data: bytes, *, where: str, hint: str) -> OciIndex:
    """Parse ``index.json``; ``where`` names it and ``hint`` says how to repair it.

    Raises:
        RegistryError: too large, not strict JSON, or no list of manifest objects.
        TamperedError: a reference listed more than once.
    """
    doc = loads_object(data, what=where, error=_unreadable(hint), limits=_LIMITS)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise RegistryError(f"{where} is not an OCI image index (no list of manifests); {hint}")
    refs: dict[str, Entry] = {}
    for entry in manifests:
        ref = ref_name(entry)
        if ref is None:
            continue
        if ref in refs:
            raise TamperedError(
                f"{where} tags {printable(ref)} more than once; readers could disagree on what it "
                "names, so the index is refused"
            )
        refs[ref] = MappingProxyType(entry)
    return OciIndex(
        entries=tuple(MappingProxyType(entry) for entry in manifests),
        refs=MappingProxyType(refs),
        where=where,
    )


def render_index(entries: Iterable[Entry], *, order: Callable[[Entry], Any]) -> bytes:
    """The canonical JSON of an index holding ``entries``, sorted by ``order``."""
    return dump_json(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [dict(entry) for entry in sorted(entries, key=order)],
        }
    )


def manifest_entry(
    desc: Descriptor, *, artifact_type: str, annotations: Mapping[str, str]
) -> Entry:
    """The index entry of the OCI manifest ``desc``, of ``artifact_type``, annotated."""
    entry = desc.to_json()
    entry["artifactType"] = artifact_type
    entry["annotations"] = dict(annotations)
    return entry


def tagged_entry(desc: Descriptor, tag: str, *, artifact_type: str) -> Entry:
    """The index entry naming the OCI manifest ``desc``, of ``artifact_type``, as ``tag``."""
    return manifest_entry(desc, artifact_type=artifact_type, annotations={REF_NAME_ANNOTATION: tag})


def retag(entries: Iterable[Entry], entry: Entry) -> list[Entry]:
    """``entries`` with ``entry`` in place of any other under its tag."""
    tag = ref_name(entry)
    return [*(e for e in entries if ref_name(e) != tag), entry]


def _unreadable(hint: str) -> Callable[[str], RegistryError]:
    def error(message: str) -> RegistryError:
        return RegistryError(f"{message}: not an OCI image index; {hint}")

    return error


def already_tagged(
    index: OciIndex, ref: str, desc: Descriptor, *, label: str, location: str
) -> bool:
    """True when ``ref`` already names ``desc``; False when it names nothing.

    Raises:
        RegistryError: ``ref`` names other content (``label`` is the version's name@version).
    """
    entry = index.refs.get(ref)
    if entry is None:
        return False
    if entry.get("digest") != str(desc.digest):
        raise RegistryError(
            f"{label} already exists with different content in {location}; publish a new version"
        )
    return True


def with_version(
    index: OciIndex, version: str, desc: Descriptor, *, label: str, location: str
) -> list[Entry] | None:
    """``index``'s entries with ``version`` tagged as the model OCI manifest ``desc``;
    None when ``version`` names ``desc`` already.

    Raises:
        RegistryError: ``version`` names other content (as :func:`already_tagged`).
    """
    if already_tagged(index, version, desc, label=label, location=location):
        return None
    return [*index.entries, tagged_entry(desc, version, artifact_type=ARTIFACT_TYPE)]
