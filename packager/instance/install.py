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

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from packager.core.channel import Channel, Seen
from packager.core.compare import Comparison
from packager.core.names import parse_target
from packager.core.policy import Trusted, VerifyMode
from packager.core.verify import check_channel_mode, check_trusted, check_version_allowed
from packager.errors import NotFoundError, PackagerError, UsageError
from packager.instance.roots import trusted_mode
from packager.instance.smoke import SmokeLimits, run_smoke_test
from packager.instance.store import ChannelRecord, Following, Store
from packager.registry.base import RegistryReader
from packager.registry.verified import fetch_verified, latest_version, read_channel

Progress = Callable[[str], None]


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
    the smoke test's time and memory. ``progress`` receives a line per step.
    """

    verify: VerifyMode
    allow_downgrade: bool = False
    registry_ref: str | None = None
    progress: Progress | None = None
    smoke: SmokeLimits = field(default_factory=SmokeLimits)

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


@dataclass(frozen=True)
class InstallResult:
    """What an install did. ``smoke_test`` is None when nothing was installed: the channel
    named the version already current. ``channel`` is the document installed through.
    ``smoke_seconds`` and ``smoke_peak_rss`` (bytes) are the smoke test's wall time and the
    peak memory of the child process it ran in (see :mod:`packager.instance.smoke`)."""

    name: str
    version: str
    directory: Path
    manifest_sha256: str
    previous: str | None
    smoke_test: Comparison | None
    channel: Channel | None = None
    smoke_seconds: float | None = None
    smoke_peak_rss: int | None = None


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
    is recorded for ``packager update``. Installing by version stops following. Every
    refusal is written to the audit log before it is raised ("channel" entries for
    installs through a channel).

    Raises:
        UsageError: bad reference; an unverified mode for a channel; credentials in
            ``registry_ref``.
        VerificationError: bad or untrusted signature, tampered or missing files, wrong
            model, a version below the rollback floor or the policy's minimum; for a
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
        with store.lock(name):
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

    def refused(
        self, error: PackagerError, action: str, name: str, version: str | None, about: str = ""
    ) -> None:
        """Write ``error`` to the audit log as a refused ``action`` (its detail after ``about``)."""
        detail = f"{type(error).__name__}: {error}"
        self.store.audit(
            action=action,
            outcome="refused",
            now=self.now,
            name=name,
            version=version,
            detail=f"{about}: {detail}" if about else detail,
        )

    def by_channel(self, name: str, channel: str, mode: Trusted) -> InstallResult:
        version: str | None = None
        try:
            following = Following(name, channel, follow_reference(self.options.registry_ref))
            check_trusted(mode, name)
            with self.store.lock(name):
                seen = self.store.channel_seen(name, channel)
                doc, hint = read_channel(
                    self.registry, name, channel, mode=mode, now=self.now, last_seen=seen
                )
                version = doc.version
                self.options.say(
                    f"channel {name}@{channel}: sequence {doc.sequence} names {version} "
                    f"(key {hint[:16]}, expires {doc.expires.isoformat()})"
                )
                check_version_allowed(name, version, mode=mode)
                # `update` runs often: a document seen before is not audited again.
                new = seen is None or doc.sequence > seen.sequence
                record = ChannelRecord(
                    following,
                    Seen(doc.sequence, doc.version, doc.manifest_digest),
                    detail=(
                        f"{channel} sequence {doc.sequence}: {version} ({doc.manifest_digest}), "
                        f"key {hint}, issued {doc.issued.isoformat()}, expires "
                        f"{doc.expires.isoformat()}, from {self.registry.location}"
                    )
                    if new
                    else None,
                    expires=doc.expires,
                )
                current = self.store.current_version(name)
                if (
                    current == version
                    and self.store.manifest_digest(name, version) == doc.manifest_digest
                ):
                    self.store.record_channel(record, now=self.now)
                    self.options.say(f"{name}@{version} is already current")
                    return InstallResult(
                        name,
                        version,
                        self.store.installed_dir(name, version),
                        doc.manifest_digest.hex,
                        current,
                        None,
                        doc,
                    )
                return self.by_version(name, version, channel=(doc, record))
        except PackagerError as e:
            self.refused(e, "channel", name, version, about=channel)
            raise

    def by_version(
        self, name: str, version: str, channel: tuple[Channel, ChannelRecord] | None = None
    ) -> InstallResult:
        """Install ``version`` of ``name``; the caller holds the model's lock."""
        check_version_allowed(
            name,
            version,
            mode=self.options.verify,
            floor=self.store.floor(name),
            allow_downgrade=self.options.allow_downgrade,
        )
        doc, record = channel if channel is not None else (None, None)
        artifact = self.registry.resolve(name, version)
        with self.store.staging(name) as staged:
            fetched = fetch_verified(
                self.registry,
                artifact,
                mode=self.options.verify,
                dest=staged,
                say=self.options.say,
                expected_manifest=None if doc is None else doc.manifest_digest,
                local=self.store.installed_files(),
            )
            manifest = fetched.manifest

            # 5. Can this instance run it, and does it still give the recorded answers?
            smoke = run_smoke_test(staged, manifest, limits=self.options.smoke)
            comparison = smoke.comparison
            self.options.say(
                f"smoke test passed: {comparison.rows} test vectors, "
                f"max abs diff {comparison.max_abs_diff:.3g} "
                f"({smoke.seconds:.2f} s, {smoke.peak_rss / 2**20:.0f} MiB in a child process)"
            )

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
            )
        via = "" if doc is None else f"; channel {doc.channel} sequence {doc.sequence}"
        self.store.audit(
            action="install",
            outcome="ok" if fetched.statement.signed else "insecure",
            now=self.now,
            name=name,
            version=version,
            detail=f"from {self.registry.location}; manifest {fetched.manifest_digest}; "
            f"{fetched.statement.describe()}; previous {previous or '-'}{via}",
        )
        return InstallResult(
            name,
            version,
            directory,
            fetched.manifest_digest.hex,
            previous,
            comparison,
            doc,
            smoke_seconds=smoke.seconds,
            smoke_peak_rss=smoke.peak_rss,
        )


def rollback(name: str, *, store: Store, now: datetime) -> str:
    """Make the previously active installed version current again; returns it. The model
    stops following its channel, if it followed one.

    Raises:
        NotFoundError: there is no other installed version to go back to.
    """
    with store.lock(name):
        target = store.previous_version(name)
        if target is None:
            raise NotFoundError(f"{name} has no previous installed version to roll back to")
        current = store.current_version(name)
        store.activate(name, target, now=now)
        # Following a channel would undo the rollback at the next `packager update`.
        store.unfollow(name, now=now, reason=f"rolled back to {target}")
    store.audit(
        action="rollback",
        outcome="ok",
        now=now,
        name=name,
        version=target,
        detail=f"from {current}",
    )
    return target


def remove(name: str, version: str, *, store: Store, now: datetime) -> None:
    """Delete an installed, non-current version.

    Raises:
        NotFoundError, UsageError: see :meth:`Store.remove`.
    """
    with store.lock(name):
        store.remove(name, version)
    store.audit(action="remove", outcome="ok", now=now, name=name, version=version)


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
