"""Reading the root of trust's documents from any registry kind (capped; verified by the
core as they are read).

They live in the reserved repository :data:`~packager.core.root.TRUST_REPOSITORY`: root
N under the tag ``root.<N>``, the current delegations under ``delegations``.
"""

from __future__ import annotations

from packager.core.root import (
    DELEGATIONS_PAYLOAD_TYPE,
    DELEGATIONS_TAG,
    MAX_TRUST_DOCUMENT_BYTES,
    ROOT_PAYLOAD_TYPE,
    ROOT_TAG_PREFIX,
    TRUST_REPOSITORY,
    Root,
    claimed_delegations_version,
    next_root,
    root_tag,
)
from packager.errors import NotFoundError, TamperedError
from packager.registry.base import Registry, RegistryReader

# Far more roots than a publisher makes in decades; a registry cannot keep a reader
# walking forever.
MAX_ROOT_STEPS = 1024


def read_trust_document(registry: RegistryReader, tag: str) -> bytes | None:
    """The document tagged ``tag`` in the trust repository (capped), or None.

    Raises:
        TamperedError: malformed artifact, or bytes that differ from its descriptor.
        RegistryError: the registry cannot be read.
    """
    try:
        return registry.get_document(
            TRUST_REPOSITORY,
            tag,
            artifact_type=trust_document_type(tag),
            max_size=MAX_TRUST_DOCUMENT_BYTES,
        )
    except NotFoundError:
        return None


def walk_roots(registry: RegistryReader, trusted: Root) -> list[tuple[Root, bytes]]:
    """Every root after ``trusted`` in ``registry``, each verified by the one before it
    (:func:`packager.core.root.next_root`), oldest first; empty when none is newer.

    Raises:
        VerificationError: a root that does not follow (thresholds, version).
        RegistryError: the registry cannot be read.
    """
    chain: list[tuple[Root, bytes]] = []
    current = trusted
    for _ in range(MAX_ROOT_STEPS):
        data = read_trust_document(registry, root_tag(current.version + 1))
        if data is None:
            return chain
        current = next_root(current, data)
        chain.append((current, data))
    raise TamperedError(f"{registry.location} serves more than {MAX_ROOT_STEPS} new roots")


def trust_document_type(tag: str) -> str:
    """The artifact type of the trust document under ``tag``."""
    return DELEGATIONS_PAYLOAD_TYPE if tag == DELEGATIONS_TAG else ROOT_PAYLOAD_TYPE


def trust_documents(registry: RegistryReader) -> list[tuple[str, bytes]]:
    """(tag, bytes) of every root (in version order) and of the delegations in
    ``registry``; empty when it has none. Read capped, not verified (copies are verified
    by whoever installs from them).

    Raises:
        TamperedError: a malformed artifact. RegistryError: the registry cannot be read.
    """
    try:
        tags = registry.tags(TRUST_REPOSITORY)
    except NotFoundError:
        return []
    versions = sorted(
        int(tag.removeprefix(ROOT_TAG_PREFIX))
        for tag in tags
        if tag.startswith(ROOT_TAG_PREFIX) and tag.removeprefix(ROOT_TAG_PREFIX).isdigit()
    )
    wanted = [root_tag(v) for v in versions] + [DELEGATIONS_TAG] * (DELEGATIONS_TAG in tags)
    found = [(tag, read_trust_document(registry, tag)) for tag in wanted]
    return [(tag, data) for tag, data in found if data is not None]


def copy_trust_documents(source: RegistryReader, destination: Registry) -> list[str]:
    """Copy the source's roots the destination lacks, and its delegations when the
    destination has none or an older version; returns the tags copied. A root the
    destination holds with other bytes is left alone (installers refuse one of them).

    Raises:
        TamperedError: a malformed artifact. RegistryError: a registry cannot be used.
    """
    copied = []
    for tag, data in trust_documents(source):
        present = read_trust_document(destination, tag)
        if present == data or (present is not None and tag != DELEGATIONS_TAG):
            continue
        if present is not None and (
            claimed_delegations_version(present) >= claimed_delegations_version(data)
        ):
            continue
        destination.put_document(
            TRUST_REPOSITORY, tag, data, artifact_type=trust_document_type(tag)
        )
        copied.append(tag)
    return copied
