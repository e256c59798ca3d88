"""Fetch, verify, stage, smoke-test and atomically install a bundle on the instance.

The order follows the design's verification order; nothing from the registry is
trusted before the signature over it is checked, and nothing is written outside
the staging directory until every check has passed.

Every decision is :mod:`packager.core.verify`'s. ``name@channel`` is resolved through the
channel's signed document first (:func:`packager.core.verify.accept_channel`): signer
allowed for the model by the trust policy, not expired, sequence not lower than the last
one accepted; the bundle it names must then be signed with exactly the manifest digest the
document names (mix-and-match). What was accepted is recorded in state.db in the same
transaction as the install.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from packager._io.bundledir import read_signed_manifest
from packager.core.compare import Comparison
from packager.core.digests import Digest
from packager.core.manifest import Manifest
from packager.core.names import parse_target
from packager.core.policy import Trusted, VerifyMode
from packager.core.text import Progress
from packager.core.verify import (
    Attached,
    Verdict,
    check_channel_mode,
    check_floor,
    check_installed,
    check_trusted,
    check_version_allowed,
    judge,
)
from packager.errors import (
    ExpiredError,
    LocalDiskError,
    NotInstalledError,
    PackagerError,
    RegistryError,
    TamperedError,
    UntrustedError,
    UsageError,
    VerificationError,
)
from packager.instance.roots import trust_state, trusted_mode
from packager.instance.smoke import SmokeLimits, SmokeTest, run_smoke_test
from packager.instance.store import AuditFacts, ChannelRecord, Following, Store
from packager.registry.base import Artifact, RegistryReader
from packager.registry.verified import (
    Fetched,
    OnHand,
    Source,
    fetch_verified,
    latest_version,
    read_channel,
    read_signed,
)

if TYPE_CHECKING:
    from packager.core.channel import Channel, Seen


@dataclass(frozen=True)
class InstallOptions:
    """How to install, the same for the CLI and the API (``install`` and ``update``).

    ``verify`` is the one switch for signatures: :class:`~packager.core.policy.Trusted`
    with the trust policy, or :class:`~packager.core.policy.Unverified` with its reason
    (``--insecure-skip-verify``: digests still checked, audited as "insecure"; never for a
    channel). ``allow_downgrade`` installs below the rollback floor (never below the
    policy's minimum). ``registry_ref`` is the reference the user gave (None: the default
    registry): a model installed through a channel records it for ``packager update``,
    which reads every model from it for one run when it is given there. ``smoke`` bounds
    the smoke test's time and memory. ``progress`` receives a line per step. ``force``
    installs again the version already current (verified, smoke-tested, its installed files
    repaired); without it, that install changes nothing and fetches none of its files, but
    its signature, manifest and approvals are checked again against the trust policy.
    """

    verify: VerifyMode
    allow_downgrade: bool = False
    registry_ref: str | None = None
    progress: Progress | None = None
    smoke: SmokeLimits = field(default_factory=SmokeLimits)
    force: bool = False

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


@dataclass(frozen=True)
class InstallResult:
    """What an install did. ``smoke_test`` is None when nothing was installed: the channel
    named, or the reference gave, the version already current. ``channel`` is the document
    installed through. ``unfollowed`` is the channel the model stopped following (installed
    by version).
    ``smoke_seconds`` and ``smoke_peak_rss`` (bytes) are the smoke test's wall time and the
    peak memory of the child process it ran in (see :mod:`packager.instance.smoke`).
    ``sources`` says how each file came (None when nothing was installed): fetched from the
    registry (FETCHED), or reused from an installed version, unhashed because its inode is
    the one verified at its install (UNCHANGED) or hashed again (REHASHED): see
    :mod:`packager.registry.verified` and :meth:`files`."""

    name: str
    version: str
    directory: Path
    manifest_sha256: str
    previous: str | None
    smoke_test: Comparison | None
    channel: Channel | None = None
    smoke_seconds: float | None = None
    smoke_peak_rss: int | None = None
    unfollowed: str | None = None
    sources: Mapping[str, str] | None = None

    def files(self, source: str) -> tuple[str, ...]:
        """The files that came from ``source`` (FETCHED, REHASHED or UNCHANGED), in the
        manifest's order."""
        return tuple(p for p, how in (self.sources or {}).items() if how == source)


@dataclass(frozen=True)
class RolledBack:
    """What a rollback did: ``version`` is current again instead of ``previous``;
    ``unfollowed`` is the channel the model stopped following, if any."""

    name: str
    version: str
    previous: str | None
    unfollowed: str | None


def follow_reference(ref: str | None) -> str | None:
    """The registry reference recorded for a followed channel: None for the default
    registry, a URL as given, or a path made absolute (``update`` may run elsewhere).

    Raises:
        UsageError: a URL carrying credentials (they are never stored).
    """
    if ref is None:
        return None
    if "://" in ref:
        parts = urlsplit(ref)
        if parts.username is not None or parts.password is not None:
            raise UsageError(
                "put no credentials in the registry reference: use --username and "
                "--password-stdin, or PACKAGER_REGISTRY_USERNAME/PASSWORD"
            )
        return ref
    return str(Path(ref).expanduser().absolute())


def install(
    ref: str,
    *,
    registry: RegistryReader,
    store: Store,
    now: datetime,
    options: InstallOptions,
) -> InstallResult:
    """Install ``name[@version|@channel]`` from ``registry`` after verifying it as
    ``options.verify`` says.

    Unverified, the signature is not checked (digests still are) and the audit log says
    so, with the reason. Through a channel, the model then follows it: ``registry_ref``
    is recorded for ``packager update``. Installing by version stops following (the
    result's ``unfollowed`` says which channel). The version already current is not
    fetched or smoke-tested again unless ``options.force``, but with a trust policy it must
    still pass it: its installed signature and manifest are judged again (the approvals
    the policy requires read from the registry), and a refusal leaves it installed and
    current. Every
    refusal is written to the audit log before it is raised ("channel" entries for
    installs through a channel).

    Raises:
        UsageError: bad reference; an unverified mode for a channel; credentials in
            ``registry_ref``.
        VerificationError: bad or untrusted signature, tampered or missing files, wrong
            model, a version below the rollback floor or the policy's minimum, the version
            already current no longer passing the trust policy; for a
            channel also an untrusted signer, an expired document (ExpiredError), a
            sequence lower than seen (RollbackError), the same sequence naming another
            bundle, or a bundle other than the one the document names (TamperedError);
            with a pinned root, a root or delegations document refused
            (:func:`packager.instance.roots.trusted_mode`).
        NotFoundError: no such version or channel.
        RegistryError: the registry cannot be read.
        IncompatibleModelError: the runtime cannot run the model or the smoke test failed.
    """
    target = parse_target(ref)
    name, version = target.name, target.version
    # With a pinned root, the registry's delegations join the policy before anything else.
    verify = trusted_mode(
        options.verify,
        registry=registry,
        store=store,
        now=now,
        name=name,
        progress=options.progress,
    )
    options = replace(options, verify=verify)
    job = _Install(registry, store, now, options)
    if target.channel is not None:
        return job.by_channel(name, target.channel, check_channel_mode(options.verify))
    try:
        check_trusted(options.verify, name)
        if version is None:
            version = latest_version(registry, name)
        with store.lock(name), store.held_open():
            return job.by_version(name, version)
    except PackagerError as e:
        job.refused(e, "install", name, version)
        raise


@dataclass(frozen=True)
class _Install:
    """An install's registry, store, time and options, the same for each of its steps."""

    registry: RegistryReader
    store: Store
    now: datetime
    options: InstallOptions

    @property
    def source(self) -> Source:
        """Where the install reads versions from, verified as its options say."""
        return Source(self.registry, self.options.verify, self.options.progress)

    def refused(
        self,
        error: PackagerError,
        action: str,
        name: str,
        version: str | None,
        about: str = "",
        *,
        once: bool = False,
    ) -> None:
        """Write ``error`` to the audit log as a refused ``action`` (its detail after
        ``about``); with ``once``, not when the model's newest entry is that same refusal
        (:meth:`Store.repeats_latest`: `status` still shows it as the last refusal)."""
        detail = f"{type(error).__name__}: {error}"
        detail = f"{about}: {detail}" if about else detail
        repeated = once and self.store.repeats_latest(
            action=action, outcome="refused", name=name, version=version, detail=detail
        )
        if not repeated:
            self.store.audit(
                action=action,
                outcome="refused",
                now=self.now,
                name=name,
                version=version,
                detail=detail,
            )

    def by_channel(self, name: str, channel: str, mode: Trusted) -> InstallResult:
        version: str | None = None
        try:
            following = Following(name, channel, follow_reference(self.options.registry_ref))
            check_trusted(mode, name)
            with self.store.lock(name), self.store.held_open():
                seen = self.store.channel_seen(name, channel)
                doc, hint = read_channel(
                    self.registry, name, channel, mode=mode, now=self.now, last_seen=seen
                )
                version = doc.version
                self.options.say(
                    f"channel {name}@{channel}: sequence {doc.sequence} names {version} "
                    f"(key {hint[:16]}, expires {doc.expires.isoformat()})"
                )
                record = self.channel_record(following, doc, hint, seen)
                if (
                    not self.options.force
                    and self.store.current_version(name) == version
                    and self.store.manifest_digest(name, version) == doc.manifest_digest
                ):
                    return self.channel_current(doc, record)
                return self.by_version(name, version, channel=(doc, record))
        except PackagerError as e:
            # An expiry `update` has reported once, or the same refusal as the model's last
            # audit entry, is not audited again at every run.
            if not (isinstance(e, ExpiredError) and self.store.expiry_reported(name, channel)):
                self.refused(e, "channel", name, version, about=channel, once=True)
            raise

    def channel_record(
        self, following: Following, doc: Channel, hint: str, seen: Seen | None
    ) -> ChannelRecord:
        """What state.db keeps of an accepted channel document; its audit detail only when
        it is newer than the one seen (`update` runs often: a document seen before is not
        audited again)."""
        new = seen is None or doc.sequence > seen.sequence
        detail = (
            f"{doc.channel} sequence {doc.sequence}: {doc.version} ({doc.manifest_digest}), "
            f"key {hint}, issued {doc.issued.isoformat()}, expires "
            f"{doc.expires.isoformat()}, from {self.registry.location}"
        )
        from packager.core.channel import Seen  # here: installing by version reads no channel

        return ChannelRecord(
            following,
            Seen(doc.sequence, doc.version, doc.manifest_digest),
            detail=detail if new else None,
            expires=doc.expires,
        )

    def channel_current(self, doc: Channel, record: ChannelRecord) -> InstallResult:
        """The channel names the version already current: its document is recorded first
        (a newer sequence raises the replay floor even when the version no longer passes
        the trust policy), then the version is judged again (:meth:`recheck`)."""
        name, version = doc.name, doc.version
        self.store.record_channel(record, now=self.now)
        self.recheck(name, version)
        self.options.say(f"{name}@{version} is already current")
        return InstallResult(
            name,
            version,
            self.store.installed_dir(name, version),
            doc.manifest_digest.hex,
            version,
            None,
            doc,
        )

    def _installed(self, name: str) -> Path | None:
        """The current version's directory, whose shards a new version may share."""
        current = self.store.current_version(name)
        if current is None or current not in self.store.versions(name):
            return None  # none, or a `current` link whose version is gone: nothing to share
        return self.store.installed_dir(name, current)

    def by_version(
        self, name: str, version: str, channel: tuple[Channel, ChannelRecord] | None = None
    ) -> InstallResult:
        """Install ``version`` of ``name``; the caller holds the model's lock."""
        floor, allow_downgrade = self.store.floor(name), self.options.allow_downgrade
        doc, record = channel if channel is not None else (None, None)
        followed = None if doc is not None else self.store.followed().get(name)
        unfollowed = None if followed is None else followed.channel
        current = self.store.current_version(name)
        if doc is None and current == version and not self.options.force:
            # After a rollback, the version current may be below the floor.
            check_floor(name, version, floor=floor, allow_downgrade=allow_downgrade)
            return self.already_current(name, version, unfollowed)
        check_version_allowed(
            name, version, mode=self.options.verify, floor=floor, allow_downgrade=allow_downgrade
        )
        artifact = self.registry.resolve(name, version)
        with self.store.staging(name) as staged:
            fetched = self.fetch(artifact, staged, doc)
            if isinstance(mode := self.options.verify, Trusted):
                signed = fetched.manifest, fetched.manifest_digest, fetched.statement.signer
                verdict = self.judge(mode, *signed, artifact)
                self.audit_verdict(verdict, name, version)
                verdict.check()
            smoke = self.smoke_test(staged, fetched.manifest)
            # 6. Only now move it into place.
            previous = self.store.current_version(name)
            directory = self.store.commit(
                staged,
                name=name,
                version=version,
                manifest_sha256=fetched.manifest_digest.hex,
                source=self.registry.location,
                now=self.now,
                channel=record,
                fingerprints=fetched.fingerprints,
                files=fetched.manifest.files,
            )
        self.audit_install(fetched, doc, previous)
        return InstallResult(
            name,
            version,
            directory,
            fetched.manifest_digest.hex,
            previous,
            smoke.comparison,
            doc,
            smoke_seconds=smoke.seconds,
            smoke_peak_rss=smoke.peak_rss,
            unfollowed=unfollowed,
            sources=fetched.sources,
        )

    def fetch(self, artifact: Artifact, staged: Path, doc: Channel | None) -> Fetched:
        """Steps 1-4 of the verification order, into ``staged`` (see
        :func:`~packager.registry.verified.fetch_verified`)."""
        return fetch_verified(
            self.source,
            artifact,
            staged,
            expected_manifest=None if doc is None else doc.manifest_digest,
            on_hand=OnHand(
                # --force re-checks: every file reused is hashed, fingerprints or not.
                self.store.installed_files(fingerprints=not self.options.force),
                self._installed(artifact.name),
                seal=True,
            ),
        )

    def smoke_test(self, staged: Path, manifest: Manifest) -> SmokeTest:
        """5. Can this instance run it, and does it still give the recorded answers?"""
        smoke = run_smoke_test(staged, manifest, limits=self.options.smoke)
        comparison = smoke.comparison
        self.options.say(
            f"smoke test passed: {comparison.rows} test vectors, "
            f"max abs diff {comparison.max_abs_diff:.3g} "
            f"({smoke.seconds:.2f} s, {smoke.peak_rss / 2**20:.0f} MiB in a child process)"
        )
        return smoke

    def audit_install(self, fetched: Fetched, doc: Channel | None, previous: str | None) -> None:
        """The audit entry of a version installed."""
        manifest = fetched.manifest
        via = "" if doc is None else f"; channel {doc.channel} sequence {doc.sequence}"
        self.store.audit(
            action="install",
            outcome="ok" if fetched.statement.signed else "insecure",
            now=self.now,
            name=manifest.name,
            version=manifest.version,
            detail=f"from {self.registry.location}; manifest {fetched.manifest_digest}; "
            f"{fetched.statement.describe()}; previous {previous or '-'}{via}",
            facts=AuditFacts(
                key=fetched.statement.certificate or fetched.statement.signer,
                digest=str(fetched.manifest_digest),
                source=self.registry.location,
                channel=None if doc is None else doc.channel,
                sequence=None if doc is None else doc.sequence,
                previous=previous,
            ),
        )

    def already_current(self, name: str, version: str, unfollowed: str | None) -> InstallResult:
        """``install NAME@VERSION`` of the current version: no file is fetched and nothing
        run, but it must still pass the trust policy (:meth:`recheck`); the model then stops
        following its channel, as any install by version does."""
        self.recheck(name, version)
        if unfollowed is not None:
            self.store.unfollow(name, now=self.now, reason=f"installed {version} by version")
        self.options.say(f"{name}@{version} is already current; --force installs it again")
        return InstallResult(
            name,
            version,
            self.store.installed_dir(name, version),
            self.store.manifest_digest(name, version).hex,
            version,
            None,
            unfollowed=unfollowed,
        )

    def recheck(self, name: str, version: str) -> None:
        """The version already current, which is not fetched again, must still pass the
        trust policy as it is now. Its installed model.sig and manifest.json are judged
        here, with no registry (key revoked, minimum, licence rules); the registry is read
        only when the policy requires approvals, which live there (a version installed
        without model.sig has its signature and manifest.json read from the registry too,
        and the manifest.json they vouch for must be the one installed). Nothing is checked
        in an unverified mode, and nothing is written: the caller audits a refusal.

        Raises:
            VerificationError: of the kind the rule refusing it raises, its message saying
                that the current version no longer passes and stays current.
            RegistryError: the policy requires approvals (or model.sig is not installed) and
                the registry cannot be read or no longer has the version.
        """
        mode = self.options.verify
        if not isinstance(mode, Trusted):
            return
        try:
            manifest, digest, signer, artifact = self.signed_current(name, version, mode)
            self.judge(mode, manifest, digest, signer, artifact).check()
        except VerificationError as e:
            raise type(e)(
                f"{name}@{version}, the version current here, no longer passes the trust "
                f"policy: {e}; it stays installed and current, nothing was changed"
            ) from e
        except RegistryError as e:
            raise type(e)(
                f"{name}@{version}, the version current here, cannot be checked again: {e}; "
                "its approvals are read from the registry; it stays installed and current, "
                "nothing was changed"
            ) from e
        self.options.say(f"{name}@{version}: signature, manifest and approvals checked again")

    def signed_current(
        self, name: str, version: str, mode: Trusted
    ) -> tuple[Manifest, Digest, str | None, Artifact | None]:
        """The installed version's signed manifest, its digest and signer: from its installed
        model.sig and manifest.json (no artifact: the registry is not read), or from the
        registry when it has no model.sig (installed unverified), then bound to the
        manifest.json installed."""
        directory = self.store.installed_dir(name, version)
        local = read_signed_manifest(directory, mode, name=name, version=version)
        if local is not None:
            signer, manifest, digest = local
            return manifest, digest, signer, None
        artifact = self.registry.resolve(name, version)
        signed = read_signed(Source(self.registry, mode, self.options.progress), artifact)
        installed = self.store.manifest_digest(name, version)
        check_installed(signed.manifest_digest, installed, ref=artifact.ref)
        return signed.manifest, signed.manifest_digest, signed.statement.signer, artifact

    def judge(
        self,
        mode: Trusted,
        manifest: Manifest,
        digest: Digest,
        signer: str | None,
        artifact: Artifact | None,
    ) -> Verdict:
        """:func:`packager.core.verify.judge` of a version whose signature verified, with the
        approvals the policy requires read from the registry beside it (``artifact``, or the
        version resolved when None); the registry is not read when it requires none.

        Raises:
            RollbackError: below the policy's minimum.
            RegistryError: approvals required and the registry cannot be read.
        """
        attached = None
        if mode.policy.required_approvals(manifest.name):
            # Imported here: only a policy that requires approvals reads attachments.
            from packager.core.approval import APPROVAL_KIND, MAX_APPROVAL_BYTES, REVOCATION_KIND
            from packager.registry.attachments import read_attachments

            artifact = artifact or self.registry.resolve(manifest.name, manifest.version)
            attached = Attached(
                *(
                    read_attachments(self.registry, artifact, kind, max_size=MAX_APPROVAL_BYTES)
                    for kind in (APPROVAL_KIND, REVOCATION_KIND)
                )
            )
        return judge(manifest, digest, signer, mode, attached=attached, now=self.now)

    def audit_verdict(self, verdict: Verdict, name: str, version: str) -> None:
        """Every licence checked, approval document looked at and approval missing, written to
        the audit log (the refusal, if any, is :meth:`Verdict.check`'s)."""
        audit = partial(self.store.audit, now=self.now, name=name, version=version)
        for lic in verdict.licenses:
            outcome = "ok" if lic.allowed else "refused"
            audit(action="license", outcome=outcome, detail=f"{lic.subject}: {lic.detail}")
        decision = verdict.approvals
        for finding in () if decision is None else decision.findings:
            audit(
                action="approval",
                outcome="ok" if finding.accepted else "refused",
                detail=f"role {finding.role or '-'}, key {finding.key or '-'}: {finding.detail}",
            )
            self.options.say(("approval: " if finding.accepted else "refused: ") + finding.detail)
        for role, count in {} if decision is None else decision.missing.items():
            audit(
                action="approval",
                outcome="missing",
                detail=f"role {role}, key -: {count} more approval(s) required",
            )


def rollback(
    name: str, *, store: Store, now: datetime, verify: Trusted | None = None
) -> RolledBack:
    """Make the previously active installed version current again. The model stops
    following its channel, if it followed one. The rollback floor is not checked (going
    back is what rollback is for) and stays where it is.

    With a trust policy (``verify``), the version gone back to must pass it as it is now,
    judged from its installed model.sig and manifest.json with no registry
    (:func:`packager.core.verify.judge`: a key revoked, the minimum, licence rules; the
    approvals, which live in the registry, are not read); a refusal is audited and nothing
    changes. With a pinned root, whose delegations (in the registry) may trust keys the
    policy alone does not, model.sig (verified at install) must only not name a key the
    policy revokes.

    Whatever the trust policy, the version gone back to must still be the bytes verified at
    its install (:func:`packager.instance.integrity.check_installed`): a file changed since
    refuses the rollback (audited), and nothing changes.

    Raises:
        NotInstalledError: there is no other installed version to go back to.
        TamperedError: the version gone back to was changed on disk since its install.
        VerificationError: the version gone back to does not pass the trust policy.
    """
    with store.lock(name):
        target = store.previous_version(name)
        if target is None:
            raise NotInstalledError(f"{name} has no previous installed version to roll back to")
        current = store.current_version(name)
        _check_rollback(name, target, current, store=store, now=now)
        if verify is not None:
            _judge_rollback(name, target, current, store=store, mode=verify, now=now)
        store.activate(name, target, now=now)
        # Following a channel would undo the rollback at the next `packager update`.
        unfollowed = store.unfollow(name, now=now, reason=f"rolled back to {target}")
    store.audit(
        action="rollback",
        outcome="ok",
        now=now,
        name=name,
        version=target,
        detail=f"from {current}",
        facts=AuditFacts(previous=current),
    )
    return RolledBack(name, target, current, unfollowed)


def _check_rollback(
    name: str, target: str, current: str | None, *, store: Store, now: datetime
) -> None:
    """The installed ``target`` must still be the bytes verified at its install
    (:func:`packager.instance.integrity.check_installed`); a refusal is audited, then
    raised naming what stays current and how to have ``target`` again."""
    from packager.instance.integrity import check_installed  # here: only rollback needs it

    try:
        check_installed(store, name, target)
    except TamperedError as e:
        error = TamperedError(
            f"refusing to roll back {name} to {target}: {e}; {current or 'nothing'} stays "
            f"current; install {name}@{target} again from a registry to have it back"
        )
        detail = f"TamperedError: {error}"
        store.audit(
            action="rollback", outcome="refused", now=now, name=name, version=target, detail=detail
        )
        raise error from e


def _judge_rollback(
    name: str, target: str, current: str | None, *, store: Store, mode: Trusted, now: datetime
) -> None:
    """The installed ``target`` judged by ``mode`` offline (see :func:`rollback`); a
    refusal is audited, then raised naming what stays current."""
    try:
        directory = store.installed_dir(name, target)
        pinned = trust_state(store) is not None
        local = read_signed_manifest(directory, mode, name=name, version=target, delegated=pinned)
        if local is None:
            raise UntrustedError(
                f"{name}@{target} was installed unverified, with no model.sig: the trust "
                "policy cannot vouch for it"
            )
        signer, manifest, digest = local
        judge(manifest, digest, signer, mode, attached=None, now=now).check()
    except (VerificationError, LocalDiskError) as e:
        error = type(e)(
            f"refusing to roll back {name} to {target}: {e}; {current or 'nothing'} stays "
            "current; install a version the trust policy allows"
        )
        detail = f"{type(e).__name__}: {error}"
        store.audit(
            action="rollback", outcome="refused", now=now, name=name, version=target, detail=detail
        )
        raise error from e


def remove(name: str, version: str, *, store: Store, now: datetime) -> None:
    """Delete an installed, non-current version.

    Raises:
        NotInstalledError, UsageError: see :meth:`Store.remove`.
    """
    from packager.instance.retention import remove_version  # here: installs remove nothing

    with store.lock(name):
        remove_version(store, name, version, action="remove", now=now)


def uninstall(name: str, *, store: Store, now: datetime) -> list[str]:
    """Delete every installed version of ``name``; returns them (see :meth:`Store.uninstall`).

    Raises:
        NotInstalledError: nothing of ``name`` is installed.
    """
    with store.lock(name):
        return store.uninstall(name, now=now)


def only_model(archive: RegistryReader, location: str) -> str:
    """The name of the one model an archive holds: ``packager install ./models.tar`` means it.

    Raises:
        UsageError: the archive holds no model or several (the message says how to pick one).
    """
    names = archive.names()
    if len(names) != 1:
        raise UsageError(
            f"{location} holds {len(names)} models ({', '.join(names) or 'none'}); "
            f"run `packager install NAME --registry {location}`"
        )
    return names[0]
