"""The root of trust on the publishing side: making, signing and publishing roots, and
delegating model names to signing keys (verifying them: :mod:`packager.instance.roots`).

A root (:mod:`packager.core.root`) is made and signed offline by a threshold of root keys
(``init_root``, then ``sign_root`` with each further key), then published as
``root.<N>`` (``publish_root``) once it verifies: root 1 by its own threshold, root N+1
by root N's and its own. Delegations are signed online, by the delegation key(s) the
newest root names (``delegate``): rotating a model signing key needs no root key.

The publisher's chain starts at ``root.1`` in the registry it publishes to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from packager.core import signature
from packager.core.root import (
    DELEGATIONS_PAYLOAD_TYPE,
    DELEGATIONS_TAG,
    ROOT_PAYLOAD_TYPE,
    TRUST_REPOSITORY,
    Delegation,
    Delegations,
    Role,
    Root,
    accept_delegations,
    check_delegations,
    check_root,
    delegations_payload,
    keys_by_hint,
    next_root,
    pin_root,
    root_payload,
    root_tag,
    sign_document,
    verify_delegations,
)
from packager.errors import (
    NotFoundError,
    RegistryError,
    UntrustedError,
    UsageError,
    VerificationError,
)
from packager.registry.base import Registry, RegistryReader
from packager.registry.roots import read_trust_document, walk_roots

DEFAULT_ROOT_EXPIRY = timedelta(days=365)
DEFAULT_DELEGATIONS_EXPIRY = timedelta(days=90)


@dataclass(frozen=True)
class RootSpec:
    """What a new root says: ``signing_keys`` are root keys present now (they sign it);
    ``other_root_keys`` sign later (``sign_root``); ``delegation_keys`` sign delegations."""

    signing_keys: Sequence[ec.EllipticCurvePrivateKey]
    threshold: int
    delegation_keys: Sequence[ec.EllipticCurvePublicKey]
    other_root_keys: Sequence[ec.EllipticCurvePublicKey] = ()
    delegation_threshold: int = 1
    version: int = 1


@dataclass(frozen=True)
class Published:
    """A trust document as stored: its kind ("root" or "delegations"), version, tag."""

    kind: str
    version: int
    tag: str
    location: str
    expires: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "reference": f"{self.location}/{TRUST_REPOSITORY}:{self.tag}",
            "expires": self.expires.isoformat(),
        }


def init_root(spec: RootSpec, *, now: datetime, expires_in: timedelta) -> bytes:
    """A root document signed by ``spec.signing_keys``; the keys of the root it follows
    add their signatures with :func:`sign_root`.

    Raises:
        UsageError: no root key, a threshold out of range, no delegation key.
    """
    root_public = [k.public_key() for k in spec.signing_keys] + list(spec.other_root_keys)
    if not root_public or not spec.delegation_keys:
        raise UsageError("a root needs at least one root key and one delegation key")
    if spec.version < 1:
        raise UsageError("a root's version starts at 1")
    root_hints = tuple(keys_by_hint(root_public))
    root = check_root(
        Root(
            spec.version,
            now + expires_in,
            keys_by_hint([*root_public, *spec.delegation_keys]),
            Role(root_hints, spec.threshold),
            Role(tuple(keys_by_hint(spec.delegation_keys)), spec.delegation_threshold),
        )
    )
    return sign_document(ROOT_PAYLOAD_TYPE, root_payload(root), list(spec.signing_keys))


def sign_root(data: bytes, *, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """``data`` (a root document) with one more signature.

    Raises:
        UsageError: the key already signed it.
        TamperedError: not a root document.
    """
    return signature.add_signature(data, ROOT_PAYLOAD_TYPE, private_key=private_key)


def publish_root(data: bytes, *, registry: Registry) -> Published:
    """Store root ``data`` as ``root.<N>`` after checking it follows the registry's chain.

    Root 1 must meet its own threshold; root N+1 root N's and its own. Publishing the
    same bytes again is a no-op.

    Raises:
        VerificationError: the root does not verify or does not follow the newest one.
        RegistryError: root N is already there with other bytes (roots are immutable),
            or the registry cannot be written.
    """
    root = pin_root(data)
    existing = read_trust_document(registry, root_tag(root.version))
    if existing is not None:
        if existing != data:
            raise RegistryError(
                f"{registry.location} already has root version {root.version} with other "
                f"content; publish version {root.version + 1} instead"
            )
    elif root.version > 1:
        newest = newest_root(registry)
        if newest.version != root.version - 1:
            raise UsageError(
                f"the registry's newest root is version {newest.version}; the next root must "
                f"be version {newest.version + 1}, not {root.version}"
            )
        next_root(newest, data)
    registry.put_document(
        TRUST_REPOSITORY, root_tag(root.version), data, artifact_type=ROOT_PAYLOAD_TYPE
    )
    return Published("root", root.version, root_tag(root.version), registry.location, root.expires)


def newest_root(registry: RegistryReader) -> Root:
    """The newest root of ``registry``'s chain, walked from ``root.1``.

    Raises:
        NotFoundError: no root.1 (publish one with `packager root publish`).
        VerificationError: a root that does not verify or follow.
    """
    first = read_trust_document(registry, root_tag(1))
    if first is None:
        raise NotFoundError(
            f"{registry.location} has no root of trust; publish one with "
            "`packager root init` and `packager root publish`"
        )
    root = pin_root(first)
    chain = walk_roots(registry, root)
    return chain[-1][0] if chain else root


def delegate(
    models: str,
    *,
    signer_keys: Sequence[ec.EllipticCurvePublicKey],
    delegation_keys: Sequence[ec.EllipticCurvePrivateKey],
    registry: Registry,
    now: datetime,
    expires_in: timedelta = DEFAULT_DELEGATIONS_EXPIRY,
) -> Published:
    """Delegate model names matching ``models`` to ``signer_keys`` (replacing the keys the
    glob had; no signer key removes the glob), sign the next delegations version with
    ``delegation_keys`` and store it.

    Raises:
        UsageError: the delegation keys do not meet the newest root's delegations role, or
            the glob is invalid.
        VerificationError: the registry's root chain does not verify.
        RegistryError: the registry cannot be read or written.
    """
    root = newest_root(registry)
    current = _current_delegations(registry, root)
    kept = [d for d in (current.delegations if current else ()) if d.models != models]
    if signer_keys:
        kept.append(Delegation(models, tuple(keys_by_hint(signer_keys))))
    used = {hint for d in kept for hint in d.keys}
    pems = {**(current.keys if current else {}), **keys_by_hint(signer_keys)}
    doc = check_delegations(
        Delegations(
            (current.version if current else 0) + 1,
            now + expires_in,
            {hint: pem for hint, pem in sorted(pems.items()) if hint in used},
            tuple(sorted(kept, key=lambda d: d.models)),
        )
    )
    if not doc.keys:
        raise UsageError("the delegations would be empty: delegate a glob to a key")
    data = sign_document(DELEGATIONS_PAYLOAD_TYPE, delegations_payload(doc), delegation_keys)
    try:
        accept_delegations(root, data, now=now, floor=None)
    except VerificationError as e:
        raise UsageError(
            f"root version {root.version} does not accept these delegations: {e}"
        ) from e
    registry.put_document(
        TRUST_REPOSITORY, DELEGATIONS_TAG, data, artifact_type=DELEGATIONS_PAYLOAD_TYPE
    )
    return Published("delegations", doc.version, DELEGATIONS_TAG, registry.location, doc.expires)


def _current_delegations(registry: RegistryReader, root: Root) -> Delegations | None:
    """The registry's delegations if the newest root's delegation keys signed them (expired
    ones too: the next version replaces them); None when there are none, or when a key an
    older root named signed them: the new delegation keys start afresh (instances reset
    their floor when the delegations role changes)."""
    data = read_trust_document(registry, DELEGATIONS_TAG)
    if data is None:
        return None
    try:
        return verify_delegations(root, data)
    except UntrustedError:
        return None
