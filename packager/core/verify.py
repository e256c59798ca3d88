"""Every rule that decides whether bytes are trusted (pure), like python-tuf's
``TrustedMetadataSet``: bytes and parsed objects in, a decision out.

Fetching, reading files and writing them is the callers' job (:mod:`packager.registry.verified`,
:mod:`packager._io.bundledir`); they hand the bytes over in the verification order:

0. :func:`check_trusted`: before anything is fetched, some key is trusted for the model;
1. :func:`verify_signature` (or :func:`unverified_statement`, in an
   :class:`~packager.core.policy.Unverified` mode) gives the :class:`Statement`: what the
   bundle must consist of (:func:`served_file`: a registry answer without model.sig or
   manifest.json is no signed bundle);
2. :func:`check_manifest_digest` then :func:`check_manifest`: the manifest.json served is the
   signed one (and the one a channel names), for the model and version asked for
   (:func:`check_binding`, the one name/version rule), listing exactly the signed files;
3. :func:`check_served` (what a registry describes) or :func:`check_files` (what a
   directory holds): every file's digest and size are the signed ones;
4. :func:`check_version_allowed`: the policy's minimum version (:func:`check_minimum`)
   and the rollback floor.

The version already current, installed again without being fetched, is re-checked by the
same rules on its signature, manifest.json and approvals, and :func:`check_installed`
binds what they vouch for to what is installed.

A file the instance already holds with a signed digest is reused without hashing only when
:func:`unchanged_since_verified` says its inode is the one verified and recorded then, and
:func:`still_the_same_inode` that the link made into staging is that inode.

Channel documents: :func:`check_channel_document` (signer and name/channel binding) and
:func:`accept_channel` (also expiry, replay and equivocation); :func:`check_channel_mode`
refuses to follow a channel unverified.

Approvals: :func:`evaluate_approvals` decides which signed approvals count for one exact
bundle; :meth:`ApprovalDecision.check` refuses a bundle that lacks one the policy requires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from packager.core import signature
from packager.core.digests import Digest
from packager.core.fingerprint import Fingerprint
from packager.core.manifest import MANIFEST, SIGNATURE, Manifest, parse_manifest
from packager.core.policy import Trusted, TrustedKey, TrustPolicy, Unverified, VerifyMode
from packager.core.semver import semver_key
from packager.core.shards import EMPTY, Hashed, Shard, mismatch
from packager.errors import (
    ExpiredError,
    RollbackError,
    TamperedError,
    UntrustedError,
    UsageError,
    VerificationError,
    WrongModelError,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from packager.core import x509
    from packager.core.approval import Approval
    from packager.core.benchrecord import BenchmarkResult
    from packager.core.channel import Channel, Seen
    from packager.core.statements import Subject

# What a file is described by: its digest and its size in bytes.
Described = tuple[Digest, int]
T = TypeVar("T")


@dataclass(frozen=True)
class Statement:
    """What a bundle must consist of: each file but model.sig, by path, with its digest.

    ``signer`` is the hint of the trusted key whose signature vouches for ``resources``;
    it is None only in an :class:`~packager.core.policy.Unverified` ``mode``, where
    ``resources`` are what manifest.json lists as served. ``certificate`` describes the
    signing certificate and its CA when a trusted CA certified that key.

    A bundle signed by shards has ``shard_size`` set and every signed file's shards in
    ``shards``; ``resources`` then holds the files of one shard only (whose shard digest
    is the file's). An empty file has no shard: manifest.json (signed) vouches for it.
    """

    resources: Mapping[str, Digest]
    mode: VerifyMode
    signer: str | None = None
    certificate: str | None = None
    shard_size: int | None = None
    shards: Mapping[str, tuple[Shard, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def signed(self) -> bool:
        return self.signer is not None

    def signer_name(self) -> str | None:
        """The name the policy gives the key that signed (None: unverified, or a key
        only a CA vouches for)."""
        if self.signer is None or not isinstance(self.mode, Trusted):
            return None
        return self.mode.policy.key_named_by_hint().get(self.signer)

    def describe(self) -> str:
        """Who vouches for the bundle, for messages and the audit log."""
        if self.certificate is not None:
            return self.certificate
        if self.signer is not None:
            return f"key {self.signer}"
        reason = self.mode.reason if isinstance(self.mode, Unverified) else "-"
        return f"signature not verified ({reason})"


def check_trusted(mode: VerifyMode, name: str) -> None:
    """Fail closed before anything is fetched: in a trusted mode, some key or CA must be
    trusted for model ``name``.

    Raises:
        UntrustedError: no rule covers ``name``, or every key and CA its rules name is revoked.
    """
    if isinstance(mode, Trusted):
        mode.policy.check_covered(name)


def check_channel_mode(mode: VerifyMode) -> Trusted:
    """A channel is only as trustworthy as its signature: never followed unverified.

    Raises:
        UsageError: ``mode`` is unverified.
    """
    if isinstance(mode, Unverified):
        raise UsageError(
            "a channel is only as trustworthy as its signature: install through a "
            f"channel with a trust policy, not {mode.reason}"
        )
    return mode


def served_file(served: Mapping[str, T], path: str) -> T:
    """What a registry answer describes for ``path``.

    Raises:
        TamperedError: it describes no such file: not a signed bundle.
    """
    try:
        return served[path]
    except KeyError:
        raise TamperedError(
            f"the registry artifact has no {path}; it is not a signed bundle"
        ) from None


def verify_signature(
    sig: bytes, mode: Trusted, *, name: str, now: datetime | None = None
) -> Statement:
    """Verify ``model.sig``: its signer must be trusted for model ``name`` by ``mode``'s
    policy (:func:`_signed_payload`; certificates valid at ``now``, default the current time).

    Raises:
        UntrustedError: no key or CA is trusted for ``name``, the signature was made with a
            revoked key (under a revoked CA: named), or no trusted key or CA vouches for it.
        TamperedError: ``sig`` is too large or malformed.
    """
    check_claimed_signer(sig, mode.policy)
    revoked = mode.policy.revoked_hints()
    payload, hint, certificate = _signed_payload(
        sig, signature.PAYLOAD_TYPE, mode.policy, name=name, now=now, what="model.sig"
    )
    if hint in revoked:  # the hint it claimed was not the key that verified it
        raise UntrustedError(
            f"model.sig was made with the revoked key {revoked[hint]!r}; "
            "ask the publisher for a version signed with a current key"
        )
    statement = signature.parse_verified_statement(payload, key_hint=hint)
    return Statement(
        statement.resources,
        mode,
        statement.key_hint,
        certificate,
        shard_size=statement.shard_size,
        shards=statement.shards,
    )


def revoked_name(signer: str | None, policy: TrustPolicy) -> str | None:
    """The name under which ``policy`` revokes the key of hint ``signer`` (a signature
    verified with keys given outright, which the policy did not choose), else None."""
    return policy.revoked_hints().get(signer) if signer is not None else None


def check_claimed_signer(sig: bytes, policy: TrustPolicy) -> None:
    """``model.sig`` must not claim a key ``policy`` revokes. What it claims is not
    authenticated, so this can only refuse: first of :func:`verify_signature`'s and
    :func:`check_no_revoked_signer`'s checks, naming the key before any signature check.

    Raises:
        UntrustedError: naming the revoked key.
    """
    revoked = policy.revoked_hints()
    claimed = signature.claimed_key_hint(sig)
    if claimed is not None and claimed in revoked:
        raise UntrustedError(
            f"model.sig was made with the revoked key {revoked[claimed]!r}; "
            "ask the publisher for a version signed with a current key"
        )


def check_no_revoked_signer(sig: bytes, policy: TrustPolicy) -> None:
    """``model.sig``, verified once (at install) against keys ``policy`` alone may not
    hold, must not have been made with a key or under a CA ``policy`` now revokes. Offline
    and independent of the unauthenticated key hint: the DSSE signature is checked against
    every revoked key, and the chain it carries against every revoked CA (at any time: a
    revoked CA stays revoked once its certificates expire).

    Raises:
        UntrustedError: naming the revoked key or CA.
        TamperedError: ``sig`` is malformed.
    """
    check_claimed_signer(sig, policy)
    for key in policy.keys.values():
        if policy.is_revoked(key) and _verifies_with(sig, key.public_key):
            raise UntrustedError(
                f"model.sig was made with the revoked key {key.name!r}; "
                "ask the publisher for a version signed with a current key"
            )
    chain = signature.certificate_chain(sig)
    if chain is None:
        return
    from packager.core import x509  # here: most signatures are by a key, with no chain

    ca = x509.revoked_in_chain(x509.parse_chain(chain, what="model.sig"), policy.revoked_cas())
    if ca is not None:
        raise UntrustedError(
            f"model.sig was signed under the revoked CA {ca.name!r}; ask the publisher for "
            "a version signed under a current CA"
        )


def _verifies_with(sig: bytes, key: ec.EllipticCurvePublicKey) -> bool:
    try:
        signature.verify_envelope(sig, signature.PAYLOAD_TYPE, public_keys=[key], what="model.sig")
    except UntrustedError:
        return False
    return True


def _signed_payload(
    data: bytes,
    payload_type: str,
    policy: TrustPolicy,
    *,
    name: str,
    now: datetime | None,
    what: str,
) -> tuple[bytes, str, str | None]:
    """The one signer rule, for model.sig and channel documents alike: the signature is
    trusted for model ``name`` when it carries a certificate chain that leads to a CA the
    policy allows for ``name`` (:func:`certified_signer`), or when its key is one of the
    keys the policy allows for ``name`` (a certificate adds nothing to a trusted key).

    Returns the payload, the hint of the signing key, and who the certificate names under
    which CA when a CA vouched (else None).

    Raises:
        UntrustedError: neither; when the chain was refused by a CA the policy allows for
            ``name``, that refusal.
        TamperedError: malformed.
    """
    chain = signature.certificate_chain(data, payload_type)
    refused: UntrustedError | None = None
    if chain is not None:
        try:
            signer = certified_signer(chain, policy, name=name, now=now, what=what)
        except UntrustedError as e:
            if not _trusts(policy.keys_for, name):
                raise
            refused = e if _trusts(policy.cas_for, name) else None
        else:
            leaf_key = signer.public_key()
            payload = signature.verify_envelope_with_certificate(
                data, payload_type, leaf_key=leaf_key, what=what
            )
            return payload, signature.key_hint(leaf_key), signer.describe()
    try:
        payload, hint = signature.verify_envelope(
            data,
            payload_type,
            public_keys=policy.keys_for(name),
            what=what,
            advice=policy.trust_advice(name),
        )
    except UntrustedError:
        if refused is None:
            raise
        raise refused from None
    return payload, hint, None


def _trusts(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except UntrustedError:
        return False
    return True


def certified_signer(
    chain: tuple[bytes, ...],
    policy: TrustPolicy,
    *,
    name: str,
    now: datetime | None,
    what: str,
) -> x509.CertifiedSigner:
    """The one certificate rule: ``chain`` (DER, leaf first, as a signature carries it)
    leads to a CA ``policy`` trusts for model ``name``, valid at ``now`` (default: the
    current time: nothing in a bundle proves when it was signed), through no revoked CA,
    to a leaf that may sign and matches the CA's identities (:func:`x509.verify_chain`).

    Raises:
        UntrustedError: no CA is trusted for ``name``, or the chain fails any check.
        TamperedError: the certificates are not DER X.509.
    """
    from packager.core import x509  # here: most signatures are by a key, with no chain

    return x509.verify_chain(
        x509.parse_chain(chain, what=what),
        policy.cas_for(name),
        revoked=policy.revoked_cas(),
        now=now or datetime.now(UTC),
        what=what,
    )


def unverified_statement(manifest_bytes: bytes, mode: Unverified) -> Statement:
    """What an unverified mode trusts instead of a signature: manifest.json as served.

    Raises:
        TamperedError: the manifest is not a valid manifest.json.
    """
    manifest = parse_manifest(manifest_bytes)
    resources = {entry.path: entry.digest for entry in manifest.files}
    resources[MANIFEST] = Digest.of(manifest_bytes)
    return Statement(resources, mode)


def signed_digest(statement: Statement, path: str) -> Digest:
    """The digest the statement gives ``path``.

    Raises:
        TamperedError: the statement covers no such file.
    """
    try:
        return statement.resources[path]
    except KeyError:
        raise TamperedError(f"{path} is not covered by the signature") from None


def check_manifest_digest(
    statement: Statement, served: Digest, *, ref: str, expected: Digest | None = None
) -> Digest:
    """The signed manifest.json digest, checked against the one a channel document names
    (``expected``) and the one the registry serves (``served``) for ``ref``.

    Raises:
        TamperedError: the bundle is signed with another manifest.json than the channel
            names (mix-and-match), or the registry serves a manifest.json that is not the
            signed one.
    """
    digest = signed_digest(statement, MANIFEST)
    if expected is not None and digest != expected:
        version = ref.rpartition("@")[2]
        raise TamperedError(
            f"mix-and-match: the channel names {ref} with manifest.json {expected}, but the "
            f"bundle the registry serves as {version} is signed with {digest}; do not use it"
        )
    if served != digest:
        raise TamperedError(
            "the registry serves a manifest.json that is not the signed one; "
            "do not use this artifact"
        )
    return digest


def check_manifest(
    statement: Statement,
    data: bytes,
    *,
    name: str | None = None,
    version: str | None = None,
    source: str = "the registry",
) -> Manifest:
    """Check manifest.json bytes against the statement, parse it, and bind name, version
    and files.

    Raises:
        TamperedError: the bytes are not the signed manifest, the manifest is invalid,
            or signed resources and manifest files differ (missing or extra files).
        WrongModelError: a manifest of another model or version (see :func:`check_binding`).
    """
    if Digest.of(data) != signed_digest(statement, MANIFEST):
        raise TamperedError("manifest.json does not match its signed digest")
    manifest = parse_manifest(data)
    check_binding(manifest, name=name, version=version, signed=statement.signed, source=source)
    check_resources(statement, manifest)
    return manifest


def check_binding(
    manifest: Manifest,
    *,
    name: str | None,
    version: str | None,
    signed: bool = True,
    source: str = "the registry",
) -> None:
    """The one name/version rule: a manifest of another model or version than the one
    asked for is the wrong software, however validly signed (None: not asked).

    Raises:
        WrongModelError: naming what was asked for, what was served and by whom.
    """
    if name is not None and manifest.name != name:
        wrong = "model"
    elif version is not None and manifest.version != version:
        wrong = "version"
    else:
        return
    asked = name if version is None else f"{name or manifest.name}@{version}"
    kind = "signed" if signed else "unverified"
    raise WrongModelError(
        f"asked for {asked} but the {kind} bundle is {manifest.ref}; "
        f"{source} serves the wrong {wrong}"
    )


def check_resources(statement: Statement, manifest: Manifest) -> None:
    """Signed resources must be exactly the manifest's files plus manifest.json, same digests.

    Raises:
        TamperedError: naming the first file missing, extra or with a different digest.
    """
    listed = {f.path: f for f in manifest.files}
    signed = _signed_files(statement) - {MANIFEST}
    extra = sorted(signed - set(listed))
    missing = sorted(set(listed) - signed - _empty_files(statement, manifest))
    if extra:
        raise TamperedError(f"the signature covers {extra[0]}, which manifest.json does not list")
    if missing:
        raise TamperedError(f"{missing[0]} is listed in manifest.json but not signed")
    for path, entry in listed.items():
        if path in statement.resources and statement.resources[path] != entry.digest:
            raise TamperedError(f"{path}: manifest.json and the signature disagree on its digest")
        shards = statement.shards.get(path)
        if shards and shards[-1].end != entry.size:
            raise TamperedError(
                f"{path}: manifest.json says {entry.size} bytes, its signed shards {shards[-1].end}"
            )


def _signed_files(statement: Statement) -> set[str]:
    """Every file the statement signs a digest or shards of."""
    return set(statement.resources) | set(statement.shards)


def _empty_files(statement: Statement, manifest: Manifest) -> set[str]:
    """Files signed by shards that have none: the empty files manifest.json lists."""
    if statement.shard_size is None:
        return set()
    return {f.path for f in manifest.files if f.size == 0 and f.digest == EMPTY}


def check_served(statement: Statement, manifest: Manifest, served: Mapping[str, Described]) -> None:
    """What a registry describes (path -> digest and size, model.sig included or not)
    must be exactly the signed files, with the signed digests and sizes.

    Raises:
        TamperedError: another file set, or a file described with another digest or size.
    """
    files = set(served) - {SIGNATURE}
    signed = _signed_files(statement) | _empty_files(statement, manifest)
    if files != signed:
        odd = sorted(files ^ signed)[0]
        than = "was signed" if statement.signed else "manifest.json lists"
        raise TamperedError(
            f"the registry serves a different file set than {than} ({odd}); "
            "do not use this artifact"
        )
    for entry in manifest.files:
        digest, size = served[entry.path]
        if digest != entry.digest or size != entry.size:
            raise TamperedError(
                f"the registry serves {entry.path} as {digest} ({size} bytes) "
                f"but the signed manifest says {entry.digest} ({entry.size} bytes)"
            )


def check_files(
    statement: Statement, manifest: Manifest, present: Mapping[str, Described | Hashed]
) -> None:
    """Files found (path -> digest and size, or what hashing them by shards gave; model.sig
    excluded) must be exactly the signed resources, with the signed digests (each shard's
    for a file signed by several) and the manifest's sizes.

    Raises:
        TamperedError: a file is missing, extra, or differs from what was signed.
    """
    signed = statement.signed
    expected = _signed_files(statement) | _empty_files(statement, manifest)
    for path in sorted(set(present) | expected):
        if path not in expected:
            raise TamperedError(
                f"{path} is not covered by the signature (extra file)"
                if signed
                else f"{path} is not listed in manifest.json (extra file)"
            )
        if path not in present:
            raise TamperedError(
                f"{path} is signed but missing"
                if signed
                else f"{path} is listed in manifest.json but missing"
            )
        found = _hashed(present[path])
        problem = _differs(statement, path, found)
        if problem is not None:
            raise TamperedError(
                problem if signed else f"{path} differs from manifest.json; re-package the model"
            )
    for entry in manifest.files:
        if _hashed(present[entry.path]).size != entry.size:
            raise TamperedError(f"{entry.path}: size differs from manifest.json")


def unchanged_since_verified(
    recorded: Fingerprint | None, found: Fingerprint, *, signed_size: int
) -> bool:
    """Whether a held file may stand for its signed digest without being hashed again:
    ``recorded`` is the fingerprint its inode had when this instance verified, wrote,
    fsynced and sealed those bytes (recorded for that digest), ``found`` what ``lstat``
    says now. Only an identical fingerprint (same device, inode, size, mtime and ctime:
    no write, chmod or link since, as far as the kernel tracks) of the signed size counts;
    no record, or anything else, is hashed.
    """
    return recorded is not None and found == recorded and found.size == signed_size


LOCAL_FILESYSTEMS = frozenset({"ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs"})
"""Filesystems whose inodes' times the local kernel keeps: network and FUSE filesystems
(NFS, 9p, FUSE) keep them elsewhere, where a write may not move them."""


def fingerprints_hold_on(filesystem: str | None) -> bool:
    """Whether a fingerprint may vouch for a file on a filesystem of this type (None:
    unknown): only on :data:`LOCAL_FILESYSTEMS`; elsewhere every file reused is hashed."""
    return filesystem in LOCAL_FILESYSTEMS


def still_the_same_inode(before: Fingerprint, linked: Fingerprint) -> bool:
    """Whether the hard link made into staging is the inode judged by
    :func:`unchanged_since_verified`, unchanged: same device, inode, size and mtime (the
    link itself moves ctime and the link count). Otherwise the staged file is hashed."""
    return before.same_content(linked)


def _hashed(found: Described | Hashed) -> Hashed:
    return found if isinstance(found, Hashed) else Hashed(found[1], (found[0],))


def _differs(statement: Statement, path: str, found: Hashed) -> str | None:
    """Why the file ``path``, hashed as ``found``, is not the one signed; None if it is."""
    shards = statement.shards.get(path, ())
    if len(shards) > 1:
        if found.whole is not None:  # hashed whole: only its size can tell
            return f"{path} was modified after signing (its size or shards differ)"
        return mismatch(path, shards, found.digests)
    if found.whole != statement.resources.get(path, EMPTY):
        return f"{path} was modified after signing (sha256 differs)"
    return None


def check_version_allowed(
    name: str,
    version: str,
    *,
    mode: VerifyMode,
    floor: str | None = None,
    allow_downgrade: bool = False,
) -> None:
    """``version`` must not be below the trust policy's minimum for ``name`` (never
    overridden), nor below the rollback ``floor`` (the highest version installed before)
    unless ``allow_downgrade``.

    A version of the same precedence as the floor but spelled differently
    (``1.0.0+build.1`` after ``1.0.0+build.2``: build metadata has no order) is another
    build that cannot be shown to be newer, so it is refused like a lower one; the floor's
    own version again is a reinstall.

    Raises:
        RollbackError: naming the minimum or the floor, and what to do.
    """
    check_minimum(name, version, mode=mode)
    check_floor(name, version, floor=floor, allow_downgrade=allow_downgrade)


def check_floor(
    name: str, version: str, *, floor: str | None, allow_downgrade: bool = False
) -> None:
    """``version`` must not be below the rollback ``floor`` unless ``allow_downgrade`` (see
    :func:`check_version_allowed`).

    Raises:
        RollbackError: naming the floor, and what to do.
    """
    if floor is None or allow_downgrade or version == floor:
        return
    if semver_key(version) < semver_key(floor):
        raise RollbackError(
            f"refusing to install {name}@{version}: {floor} was installed before "
            f"(rollback floor); use `packager rollback {name}` for an installed version, "
            "or --allow-downgrade if you really mean it"
        )
    if semver_key(version) == semver_key(floor):
        raise RollbackError(
            f"refusing to install {name}@{version}: {floor} was installed before and differs "
            "only in build metadata, which does not say which build is newer (rollback "
            "floor); publish a higher version, or pass --allow-downgrade if you really mean it"
        )


def check_minimum(name: str, version: str, *, mode: VerifyMode) -> None:
    """``version`` must not be below the trust policy's minimum for ``name``.

    Raises:
        RollbackError: naming the minimum and the policy that sets it.
    """
    if isinstance(mode, Trusted):
        minimum = mode.policy.minimum.get(name)
        if minimum is not None and semver_key(version) < semver_key(minimum):
            raise RollbackError(
                f"{name}@{version} is below the minimum version {minimum} set in "
                f"{mode.policy.source}"
            )


def check_installed(signed: Digest, installed: Digest, *, ref: str) -> None:
    """The version installed here is the one the registry's signature vouches for: the
    signed manifest.json of ``ref`` has the digest recorded when it was installed.

    Raises:
        TamperedError: the registry serves ``ref`` signed with another manifest.json, so
            its signature says nothing of the installed bundle.
    """
    if signed != installed:
        raise TamperedError(
            f"the registry serves {ref} signed with manifest.json {signed}, but the one "
            f"installed here is {installed}: its signature does not vouch for what runs here"
        )


def check_channel_document(
    data: bytes, policy: TrustPolicy, *, name: str, channel: str, now: datetime | None = None
) -> tuple[Channel, str]:
    """A channel document's signature (by a signer ``policy`` allows for ``name``) and its
    name/channel binding, but not its expiry or sequence: what promoting over a document
    and copying one need. Returns the document and the hint of the key that signed it.

    Raises:
        TamperedError: larger than the cap, or malformed.
        UntrustedError: no key or CA is trusted for ``name``, or none of them vouches for it.
        WrongModelError: the document of another model or channel.
    """
    # Imported here, as the approvals' readers below: installing by version reads neither.
    from packager.core.channel import MAX_CHANNEL_BYTES, PAYLOAD_TYPE
    from packager.core.channel import parse_channel_payload as _parse_channel_payload

    if len(data) > MAX_CHANNEL_BYTES:
        raise TamperedError(f"channel document is larger than {MAX_CHANNEL_BYTES} bytes")
    payload, hint, _ = _signed_payload(
        data, PAYLOAD_TYPE, policy, name=name, now=now, what=f"channel {name}@{channel}"
    )
    doc = _parse_channel_payload(payload)
    if (doc.name, doc.channel) != (name, channel):
        raise WrongModelError(
            f"asked for {name}@{channel} but the registry serves the channel document of "
            f"{doc.name}@{doc.channel}"
        )
    return doc, hint


def accept_channel(
    data: bytes,
    mode: Trusted,
    *,
    name: str,
    channel: str,
    now: datetime,
    last_seen: Seen | None,
) -> tuple[Channel, str]:
    """Verify a channel document an instance is to follow; return it and the hint of the
    key that signed it.

    Raises:
        UntrustedError: no key allowed for ``name`` signed it.
        TamperedError: malformed, or the same sequence as before naming another bundle
            (equivocation).
        WrongModelError: a document for another model or channel.
        ExpiredError: past its expiry at ``now`` (a registry freezing updates).
        RollbackError: a sequence lower than the last one seen (a replay).
    """
    doc, hint = check_channel_document(data, mode.policy, name=name, channel=channel, now=now)
    if now >= doc.expires:
        raise ExpiredError(
            f"channel {name}@{channel} expired at {_timestamp(doc.expires)} (sequence "
            f"{doc.sequence}); the registry may be withholding updates: ask the publisher "
            "to promote again"
        )
    if last_seen is not None:
        if doc.sequence < last_seen.sequence:
            raise RollbackError(
                f"channel {name}@{channel} sequence {doc.sequence} is older than "
                f"{last_seen.sequence} seen before: the registry is replaying an old promotion"
            )
        same = (doc.version, doc.manifest_digest) == (last_seen.version, last_seen.manifest_digest)
        if doc.sequence == last_seen.sequence and not same:
            raise TamperedError(
                f"channel {name}@{channel} sequence {doc.sequence} now names {doc.version}, "
                f"but named {last_seen.version} before: two different signed documents"
            )
    return doc, hint


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- approvals --------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalFinding:
    """What one approval document was found to be: ``accepted`` or refused (``detail``
    says why). ``key`` is the name the policy gives the signing key, when one verifies it."""

    accepted: bool
    detail: str
    role: str | None = None
    key: str | None = None
    approval: Approval | None = None


@dataclass(frozen=True)
class ApprovalDecision:
    """The approvals a bundle needs (role -> count), what each document offered was
    found to be, and what is still missing (role -> how many more)."""

    required: Mapping[str, int]
    findings: tuple[ApprovalFinding, ...]
    missing: Mapping[str, int]

    def check(self, ref: str) -> None:
        """Raises UntrustedError naming every missing approval (and why the documents
        offered did not count) unless the bundle has every approval it needs."""
        if not self.missing:
            return
        wanted = ", ".join(f"{count} more {role}" for role, count in self.missing.items())
        refused = "; ".join(f.detail for f in self.findings if not f.accepted)
        raise UntrustedError(
            f"{ref} lacks the approvals the trust policy requires: {wanted}"
            + (f" (refused: {refused})" if refused else "")
            + f"; a reviewer runs `packager approve {ref} --role ROLE --key KEY`"
        )


def evaluate_approvals(
    approvals: Sequence[bytes],
    revocations: Sequence[bytes],
    policy: TrustPolicy,
    *,
    subject: Subject,
    bundle_signer: str | None,
    now: datetime,
) -> ApprovalDecision:
    """Which of the ``approvals`` count for the bundle ``subject`` (a version and the digest
    of its signed manifest.json) which ``bundle_signer`` (a key hint) signed.

    An approval counts when it verifies with a key of ``policy`` that is not revoked and
    holds the role it names, is for exactly this name, version and manifest digest, is not
    expired at ``now``, was not signed by ``bundle_signer`` (separation of duties), and no
    revocation signed by the same key withdraws it. Each key counts once per role.
    """
    required = policy.required_approvals(subject.name)
    judge = _ApprovalJudge(
        policy, subject, bundle_signer, now, _withdrawn(revocations, policy, subject)
    )
    findings = tuple(judge.finding(data) for data in approvals)
    signers: dict[str, set[str]] = {}
    for finding in findings:
        if finding.accepted and finding.role is not None and finding.key is not None:
            signers.setdefault(finding.role, set()).add(finding.key)
    missing = {
        role: count - len(signers.get(role, ()))
        for role, count in required.items()
        if len(signers.get(role, ())) < count
    }
    return ApprovalDecision(required, findings, missing)


def _approval_signer(
    data: bytes, payload_type: str, policy: TrustPolicy, what: str
) -> tuple[bytes, TrustedKey]:
    """The payload of a document and the policy key (revoked or not) that signed it.

    Raises:
        TamperedError: larger than the cap or malformed.
        UntrustedError: no key of the policy signed it.
    """
    from packager.core.approval import MAX_APPROVAL_BYTES

    if len(data) > MAX_APPROVAL_BYTES:
        raise TamperedError(f"{what} is larger than {MAX_APPROVAL_BYTES} bytes")
    keys = sorted(policy.keys.values(), key=lambda k: k.name)
    if not keys:
        raise UntrustedError(f"{what}: the trust policy names no key")
    payload, hint = signature.verify_envelope(
        data, payload_type, public_keys=[k.public_key for k in keys], what=what
    )
    return payload, next(k for k in keys if k.hint == hint)


def _withdrawn(
    revocations: Sequence[bytes], policy: TrustPolicy, subject: Subject
) -> set[tuple[str, Digest]]:
    """(key hint, approval document digest) of every approval a verified revocation for
    this bundle withdraws; documents that do not verify withdraw nothing."""
    from packager.core.approval import REVOCATION_PAYLOAD_TYPE, parse_revocation_payload
    from packager.core.statements import Subject

    withdrawn = set()
    for data in revocations:
        try:
            payload, key = _approval_signer(
                data, REVOCATION_PAYLOAD_TYPE, policy, "approval revocation"
            )
            doc = parse_revocation_payload(payload)
        except VerificationError:
            continue
        if Subject(doc.name, doc.version, doc.manifest_digest) == subject:
            withdrawn.add((key.hint, doc.approval))
    return withdrawn


@dataclass(frozen=True)
class _ApprovalJudge:
    """What one approval of ``subject`` is judged against: the policy, the key hint that
    signed the bundle, the time and the approvals their signers withdrew."""

    policy: TrustPolicy
    subject: Subject
    bundle_signer: str | None
    now: datetime
    withdrawn: set[tuple[str, Digest]]

    def finding(self, data: bytes) -> ApprovalFinding:
        from packager.core.approval import PAYLOAD_TYPE as APPROVAL_PAYLOAD_TYPE
        from packager.core.approval import parse_approval_payload

        try:
            payload, key = _approval_signer(data, APPROVAL_PAYLOAD_TYPE, self.policy, "approval")
            doc = parse_approval_payload(payload)
        except VerificationError as e:
            return ApprovalFinding(False, str(e))
        by = f"{doc.role} approval by key {key.name}"
        problem = self.problem(data, doc, key)
        if problem is not None:
            return ApprovalFinding(False, f"{by} {problem}", doc.role, key.name, doc)
        when = f"issued {_timestamp(doc.issued)}" + (
            f", expires {_timestamp(doc.expires)}" if doc.expires is not None else ""
        )
        return ApprovalFinding(True, f"{by} ({key.hint[:16]}), {when}", doc.role, key.name, doc)

    def problem(self, data: bytes, doc: Approval, key: TrustedKey) -> str | None:
        """Why the approval ``doc`` (document ``data``, signed by ``key``) does not count."""
        from packager.core.statements import Subject

        problem = self.subject.mismatch(Subject(doc.name, doc.version, doc.manifest_digest))
        if problem is not None:
            return problem
        if self.policy.is_revoked(key):
            return "was made with a revoked key"
        if doc.role not in key.roles:
            return f"was made with a key that does not hold the role {doc.role}"
        if key.hint == self.bundle_signer:
            return "was made with the key that signed the bundle (separation of duties)"
        if doc.expires is not None and self.now >= doc.expires:
            return f"expired at {_timestamp(doc.expires)}"
        if (key.hint, Digest.of(data)) in self.withdrawn:
            return "was revoked by its signer"
        return None


# --- the rules beyond the signature ---------------------------------------------------------


@dataclass(frozen=True)
class Attached:
    """The approval and revocation documents read beside a version (each capped)."""

    approvals: Sequence[bytes]
    revocations: Sequence[bytes]


@dataclass(frozen=True)
class Verdict:
    """What the trust policy says of a version whose signature verified: every licence the
    rules ask about, and the approvals decision (None: none read). The caller audits the
    findings, then :meth:`check` refuses."""

    ref: str
    licenses: tuple[LicenseFinding, ...]
    approvals: ApprovalDecision | None

    def check(self) -> None:
        """Raises UntrustedError: a licence not allowed or missing, or an approval missing."""
        check_licenses(self.licenses, self.ref)
        if self.approvals is not None:
            self.approvals.check(self.ref)


def judge(
    manifest: Manifest,
    manifest_digest: Digest,
    signer: str | None,
    mode: Trusted,
    *,
    attached: Attached | None,
    now: datetime,
) -> Verdict:
    """The one list of rules a version whose signature ``mode`` verified (so no revoked
    key signed it) must pass, on every path that makes it current: a full install, the
    version already current judged again, a rollback. Not below the policy's minimum
    (raised at once), every licence rule (:func:`evaluate_licenses`), and the approvals
    (:func:`evaluate_approvals`) when ``attached`` was read (None: the policy requires none,
    or, for a rollback, no registry is read).

    Raises:
        RollbackError: below the policy's minimum.
    """
    check_minimum(manifest.name, manifest.version, mode=mode)
    approvals: ApprovalDecision | None = None
    if attached is not None:
        # Imported here: a policy that requires no approval reads no statement.
        from packager.core.statements import Subject

        approvals = evaluate_approvals(
            attached.approvals,
            attached.revocations,
            mode.policy,
            subject=Subject(manifest.name, manifest.version, manifest_digest),
            bundle_signer=signer,
            now=now,
        )
    return Verdict(manifest.ref, evaluate_licenses(manifest, mode.policy), approvals)


# --- licences -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LicenseFinding:
    """One licence checked: of the model or of a training data file (``subject``)."""

    subject: str
    expression: str | None
    allowed: bool
    detail: str


def evaluate_licenses(manifest: Manifest, policy: TrustPolicy) -> tuple[LicenseFinding, ...]:
    """Every licence the policy's rules for the model ask about, each judged against the
    rule's allow-list (:func:`packager.core.spdx.allowed_by`: OR needs one alternative
    allowed, AND all, WITH the exact pair); a missing licence is never allowed. Empty when
    no rule covers the model."""
    findings: list[LicenseFinding] = []
    for rule in policy.license_rules(manifest.name):
        subjects: list[tuple[str, str | None]] = [("the model", manifest.license)]
        if rule.training_data:
            records = manifest.provenance.training_data if manifest.provenance else None
            if not records:
                findings.append(
                    LicenseFinding(
                        "training data", None, False, "the bundle records no training data"
                    )
                )
            subjects += [(f"training data {t.uri}", t.license) for t in records or ()]
        findings += [_judge_license(s, e, rule.allow) for s, e in subjects]
    return tuple(findings)


def check_licenses(findings: Sequence[LicenseFinding], ref: str) -> None:
    """Raises UntrustedError naming every licence not allowed (or missing)."""
    refused = [f"{f.subject}: {f.detail}" for f in findings if not f.allowed]
    if refused:
        raise UntrustedError(
            f"{ref} is refused by the licence policy: {'; '.join(refused)}; ask for a "
            "bundle under an allowed licence, or change [[licenses]] in the trust policy"
        )


def _judge_license(subject: str, expression: str | None, allow: tuple[str, ...]) -> LicenseFinding:
    from packager.core.spdx import allowed_by  # deferred: reads the SPDX list

    if expression is None:
        return LicenseFinding(subject, None, False, "no licence recorded")
    try:
        ok, normal = allowed_by(expression, allow)
    except TamperedError as e:
        return LicenseFinding(subject, expression, False, str(e))
    verdict = "allowed" if ok else "not allowed"
    return LicenseFinding(
        subject, normal, ok, f"{normal} is {verdict} (allowed: {', '.join(allow) or 'none'})"
    )


# --- benchmark results ------------------------------------------------------------------


def accept_benchmark_result(
    data: bytes, policy: TrustPolicy, subject: Subject
) -> tuple[BenchmarkResult, str]:
    """A signed benchmark result of the bundle ``subject`` (a version and the digest of its
    signed manifest.json), and the hint of the key that signed it: a key ``policy`` trusts
    for the model (not revoked).

    Raises:
        TamperedError: larger than the cap, malformed, or about another bundle.
        UntrustedError: no key the policy trusts for the model signed it.
    """
    # Imported here: installs and verifications never read benchmark results.
    from packager.core.benchrecord import MAX_RESULT_BYTES, parse_result_payload
    from packager.core.benchrecord import PAYLOAD_TYPE as BENCHMARK_PAYLOAD_TYPE
    from packager.core.statements import Subject

    if len(data) > MAX_RESULT_BYTES:
        raise TamperedError(f"benchmark result is larger than {MAX_RESULT_BYTES} bytes")
    keys = policy.keys_for(subject.name)
    payload, hint = signature.verify_envelope(
        data, BENCHMARK_PAYLOAD_TYPE, public_keys=keys, what="benchmark result"
    )
    result = parse_result_payload(payload)
    problem = subject.mismatch(Subject(result.name, result.version, result.manifest_digest))
    if problem is not None:
        raise TamperedError(f"benchmark result {problem}")
    return result, hint


def check_not_revoked(policy: TrustPolicy, *, hint: str = "", fingerprint: str = "") -> None:
    """Adding a key (by ``hint``) or a CA (by certificate ``fingerprint``) never trusts one
    the policy has revoked, under whatever name: only ``trust unrevoke NAME`` does.

    Raises:
        UsageError: it is revoked (the message names it and the command).
    """
    revoked = [k.name for k in policy.keys.values() if k.revoked and hint and k.hint == hint]
    revoked += [
        c.name
        for c in policy.cas.values()
        if c.revoked and fingerprint and c.fingerprint == fingerprint
    ]
    if revoked:
        name = revoked[0]
        raise UsageError(
            f"{name!r} is revoked in {policy.source}: adding it again does not trust it; "
            f"`packager trust unrevoke {name}` if it must be trusted again"
        )
