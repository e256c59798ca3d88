"""Channels on the publishing side: promoting a version (following one: packager.instance.update).

``promote`` signs a channel document (:mod:`packager.core.channel`) naming one exact
bundle - its version and the digest of its signed manifest.json - and tags it in the
model's repository. ``packager install NAME@CHANNEL`` (:func:`packager.instance.install.install`)
verifies the document, installs what it names and records that the model follows the
channel; ``update`` does the same again for every model that follows one.

Sequence numbers only grow: each promotion takes the previous document's sequence plus
one, after checking that document with the promoting key. Two promoters racing on one
channel can still both write the same next sequence; installers then refuse the second
document they meet (the same sequence naming another bundle), and a new promotion
settles it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from packager.core import signature
from packager.core.channel import (
    ARTIFACT_TYPE,
    MAX_CHANNEL_BYTES,
    Channel,
    channel_tag,
    check_channel_name,
    sign_channel,
)
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE, parse_manifest
from packager.core.names import parse_target
from packager.core.policy import Trusted, adhoc_policy
from packager.core.signature import key_hint
from packager.core.text import Progress
from packager.core.verify import (
    check_binding,
    check_channel_document,
    check_manifest,
    served_file,
    verify_signature,
)
from packager.errors import NotFoundError, UntrustedError, UsageError, VerificationError
from packager.registry.base import Artifact, Registry

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


DEFAULT_EXPIRY = timedelta(days=30)


@dataclass(frozen=True)
class Promotion:
    """A channel document as signed and stored.

    ``signed_by_promoter`` tells whether the bundle's model.sig verifies with the
    promoting key; ``digest`` is the OCI manifest digest the document is stored under.
    """

    channel: Channel
    key_hint: str
    digest: Digest
    registry: str
    signed_by_promoter: bool

    def to_json(self) -> dict[str, Any]:
        doc = self.channel
        return {
            "name": doc.name,
            "channel": doc.channel,
            "version": doc.version,
            "manifestDigest": str(doc.manifest_digest),
            "sequence": doc.sequence,
            "issued": doc.issued.isoformat(),
            "expires": doc.expires.isoformat(),
            "key": self.key_hint,
            "digest": str(self.digest),
            "registry": self.registry,
            "signedByPromoter": self.signed_by_promoter,
        }


def promote(
    ref: str,
    *,
    channel: str,
    registry: Registry,
    private_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    expires_in: timedelta = DEFAULT_EXPIRY,
    sequence: int | None = None,
    progress: Progress | None = None,
    certificate_chain: Sequence[bytes] = (),
) -> Promotion:
    """Point ``channel`` of a model at ``name@version`` (which must be in ``registry``).

    ``certificate_chain`` (DER, the key's certificate first) goes into the document, for
    instances that trust the CA rather than the key.

    The document names the version and the digest of its manifest.json as the registry
    holds it; when model.sig verifies with the promoting key, that manifest must be the
    signed one for this name and version. When it does not (another key signed the
    bundle), a warning goes to ``progress`` and installers check the bundle against their
    own trust policy. The sequence is the previous document's plus one; a previous
    document that the promoting key does not verify is refused unless ``sequence`` is
    given.

    Raises:
        UsageError: ``ref`` is not NAME@VERSION, a malformed channel, a duration that is
            not positive, a ``sequence`` below 1 or not above the previous one, or a
            read-only registry.
        UntrustedError: without ``sequence``, a previous document the key does not verify.
        NotFoundError: the version is not in the registry.
        VerificationError: the artifact is malformed, or its manifest.json is not the one
            model.sig signs or names another model or version.
        RegistryError: the registry cannot be read or written.
    """
    say = progress or (lambda _msg: None)
    target = parse_target(ref)
    name, version = target.name, target.version
    if version is None:
        raise UsageError(f"promote names one exact version: {target.name}@VERSION")
    check_channel_name(channel)
    if expires_in <= timedelta(0):
        raise UsageError("a channel document must expire in the future: give e.g. --expires 30d")
    if sequence is not None and sequence < 1:
        raise UsageError("--sequence must be a positive integer")
    public_key = private_key.public_key()
    artifact = registry.resolve(name, version)
    manifest_digest = served_file(artifact.files, MANIFEST).digest
    signed = _check_bundle(registry, artifact, public_key)
    if not signed:
        say(
            f"WARNING: model.sig of {name}@{version} does not verify with the promoting key; "
            "installers will check it against their own trust policy"
        )
    previous = _previous_sequence(registry, name, channel, public_key)
    if sequence is None:
        if previous is None:
            sequence = 1
        elif isinstance(previous, int):
            sequence = previous + 1
        else:
            raise UntrustedError(
                f"the current {name}@{channel} document in {registry.location} does not "
                f"verify with this key ({previous}); promote with the key that signed it, or "
                "pass --sequence N above every sequence installers have seen"
            )
    elif isinstance(previous, int) and sequence <= previous:
        raise UsageError(
            f"--sequence {sequence} is not above {previous}, the sequence of the current "
            f"{name}@{channel} document; installers would refuse it as a rollback"
        )
    issued = now.replace(microsecond=0)
    doc = Channel(
        name=name,
        channel=channel,
        version=version,
        manifest_digest=manifest_digest,
        issued=issued,
        expires=issued + expires_in,
        sequence=sequence,
    )
    data = sign_channel(doc, private_key=private_key, certificate_chain=certificate_chain)
    digest = registry.put_document(name, channel_tag(channel), data, artifact_type=ARTIFACT_TYPE)
    say(f"{name}@{channel} -> {version} (sequence {sequence}) in {registry.location}")
    return Promotion(doc, key_hint(public_key), digest, registry.location, signed)


def _check_bundle(
    registry: Registry,
    artifact: Artifact,
    public_key: ec.EllipticCurvePublicKey,
) -> bool:
    """Check that the artifact's manifest.json is for its name and version; True when
    model.sig verifies with ``public_key`` (and then signs that very manifest).

    Raises:
        TamperedError: model.sig is missing or malformed, or is by this key but signs
            another manifest.json.
        WrongModelError: the manifest.json is of another model or version.
    """
    name = artifact.name
    sig = registry.read_blob(
        name, served_file(artifact.files, SIGNATURE), max_size=signature.MAX_SIGNATURE_BYTES
    )
    manifest_bytes = registry.read_blob(
        name, served_file(artifact.files, MANIFEST), max_size=MAX_MANIFEST_BYTES
    )
    try:
        statement = verify_signature(sig, _promoter(public_key), name=name)
    except UntrustedError:
        # Another key signed it: installers check it against their own trust policy.
        manifest = parse_manifest(manifest_bytes)
        check_binding(
            manifest, name=name, version=artifact.version, signed=False, source=registry.location
        )
        return False
    check_manifest(
        statement, manifest_bytes, name=name, version=artifact.version, source=registry.location
    )
    return True


def _promoter(public_key: ec.EllipticCurvePublicKey) -> Trusted:
    """Trusting the promoting key, and it alone."""
    return Trusted(adhoc_policy([public_key]))


def _previous_sequence(
    registry: Registry, name: str, channel: str, public_key: ec.EllipticCurvePublicKey
) -> int | str | None:
    """The sequence of the channel's current document when the key verifies it, the reason
    when it does not, None when there is no document yet."""
    try:
        data = registry.get_document(
            name, channel_tag(channel), artifact_type=ARTIFACT_TYPE, max_size=MAX_CHANNEL_BYTES
        )
        # Not accept_channel: an expired document is exactly what a promotion replaces.
        doc, _ = check_channel_document(
            data, _promoter(public_key).policy, name=name, channel=channel
        )
    except NotFoundError:
        return None
    except VerificationError as e:
        return str(e)
    return doc.sequence
