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
    TRUST_REPOSITORY,
    Root,
    next_root,
    root_tag,
)
from packager.errors import NotFoundError, TamperedError
from packager.registry.base import RegistryReader

# Far more roots than a publisher makes in decades; a registry cannot keep a reader
# walking forever.
MAX_ROOT_STEPS = 1024


def read_trust_document(registry: RegistryReader, tag: str) -> bytes | None:
    """The document tagged ``tag`` in the trust repository (capped), or None.

    Raises:
        TamperedError: malformed artifact, or bytes that differ from its descriptor.
        RegistryError: the registry cannot be read.
    """
    payload_type = DELEGATIONS_PAYLOAD_TYPE if tag == DELEGATIONS_TAG else ROOT_PAYLOAD_TYPE
    try:
        return registry.get_document(
            TRUST_REPOSITORY, tag, artifact_type=payload_type, max_size=MAX_TRUST_DOCUMENT_BYTES
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
