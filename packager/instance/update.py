"""``packager update``: bring every model that follows a channel to the version it names."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from packager.core.records import as_json
from packager.errors import ExpiredError, PackagerError, RegistryError
from packager.instance.install import InstallOptions, InstallResult, install
from packager.instance.store import Attempt, Following, Store
from packager.registry.base import RegistryReader

# Which failure an update reports when several models fail: trust before compatibility
# before the registry (the README's exit codes), then usage, then anything else.
EXIT_PRIORITY = (3, 5, 4, 2, 1)


@dataclass(frozen=True)
class Updated:
    """What ``update`` did for one model: ``status`` is "updated", "current", "refused" or
    "expired" (the channel's document has expired, which an earlier run reported and
    audited: the current version stays, and ``error`` is still the ExpiredError, exit 3).
    ``expires`` is the accepted document's expiry."""

    name: str
    channel: str
    registry: str | None
    status: str
    version: str | None = None
    previous: str | None = None
    error: PackagerError | None = None
    expires: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        doc = as_json(self)
        del doc["error"]
        doc["expires"] = None if self.expires is None else self.expires.isoformat()
        if self.error is not None:
            doc["error"] = f"{type(self.error).__name__}: {self.error}"
            doc["exitCode"] = self.error.exit_code
        return doc


class UpdateFailedError(PackagerError):
    """Some models could not be updated (the others were); ``exit_code`` is the most
    important of their failures'."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class UpdateReport:
    models: tuple[Updated, ...]

    @property
    def exit_code(self) -> int:
        """0 when every model is current or updated, else the most important failure's."""
        codes = {m.error.exit_code for m in self.models if m.error is not None}
        return next((code for code in EXIT_PRIORITY if code in codes), max(codes, default=0))

    def check(self) -> None:
        """Raises UpdateFailedError, naming every model refused, unless none was."""
        refused = [m for m in self.models if m.error is not None]
        if refused:
            listed = "; ".join(f"{m.name}@{m.channel}: {m.error}" for m in refused)
            raise UpdateFailedError(
                f"{len(refused)} of {len(self.models)} models not updated: {listed}",
                exit_code=self.exit_code,
            )

    def to_json(self) -> dict[str, Any]:
        return {"models": [m.to_json() for m in self.models], "exitCode": self.exit_code}


def update(
    *,
    store: Store,
    now: datetime,
    open_registry: Callable[[str | None], RegistryReader],
    options: InstallOptions,
) -> UpdateReport:
    """Bring every model that follows a channel to the version its channel names.

    Each model is resolved through the registry reference recorded when it started
    following (``options.registry_ref``, when given, is used instead for this run and not
    recorded), with every check of ``install NAME@CHANNEL`` (so an unverified
    ``options.verify`` refuses every model). A model that fails in any way, even with an
    exception that is not packager's (a registry broken beyond what its client foresaw:
    reported as a RegistryError, exit 4), is reported and audited, and the others are
    still tried: failures of single models are never raised, they are in the report (see
    :attr:`UpdateReport.exit_code`).

    An expired channel document leaves the current version serving, and fails every run
    until a newer document is accepted (ExpiredError, exit 3): the first run that finds it
    reports it as refused and audits it; later runs report the model as "expired", with
    no new audit entry.

    Each model's attempt is recorded (for ``packager status``) as soon as it is done, so
    an update killed halfway still shows the models it finished.
    """
    results: list[Updated] = []
    for follow in store.following():
        done = _update_follow(
            follow, store=store, now=now, open_registry=open_registry, options=options
        )
        store.record_attempt(_attempt(done, now))
        results.append(done)
    return UpdateReport(tuple(results))


def record_failure(store: Store, now: datetime, error: PackagerError) -> None:
    """Record ``error``, which stopped an update before it reached any model (a bad
    config.toml, no trust policy), as the last update of every model that follows a
    channel, outcome "failed": ``packager status`` then shows the update failing, not
    the success of the run before.

    Raises:
        UsageError: state.db cannot be used.
    """
    detail = f"{type(error).__name__}: {error}"
    for follow in store.following():
        store.record_attempt(
            Attempt(follow.name, follow.channel, now, "failed", None, error.exit_code, detail)
        )


def _update_follow(
    follow: Following,
    *,
    store: Store,
    now: datetime,
    open_registry: Callable[[str | None], RegistryReader],
    options: InstallOptions,
) -> Updated:
    """Update one model; whatever fails is in the result, never raised."""
    name, channel = follow.name, follow.channel
    error: PackagerError
    try:
        result = _update_one(
            follow, store=store, now=now, open_registry=open_registry, options=options
        )
    except ExpiredError as e:
        expired = _expired(follow, e, store=store)
        if isinstance(expired, Updated):
            return expired
        error = expired
    except PackagerError as e:
        error = e
    # The per-model boundary: one model's registry, however broken, never stops the others.
    except Exception as e:
        error = RegistryError(
            f"reading {name}@{channel} failed unexpectedly ({type(e).__name__}: {e}); "
            "the registry may be broken or hostile"
        )
        _audit_refusal(store, now, follow, error)
    else:
        status = "current" if result.smoke_test is None else "updated"
        expires = None if result.channel is None else result.channel.expires
        return Updated(
            name, channel, follow.registry, status, result.version, result.previous, expires=expires
        )
    options.say(f"{name}@{channel}: {error}")
    return Updated(name, channel, follow.registry, "refused", error=error)


def _expired(follow: Following, error: ExpiredError, *, store: Store) -> Updated | ExpiredError:
    """An expired channel: the error the first time (recorded as reported, to be refused
    and audited), then "expired", still failing with exit 3 but not audited again."""
    current = store.current_version(follow.name)
    if store.expiry_reported(follow.name, follow.channel):
        expires = store.followed().get(follow.name)
        return Updated(
            follow.name,
            follow.channel,
            follow.registry,
            "expired",
            current,
            error=ExpiredError(
                f"{error}; {follow.name}@{current or '-'} stays current until the "
                "publisher promotes again"
            ),
            expires=None if expires is None else expires.expires,
        )
    store.report_expiry(follow.name, follow.channel)
    return ExpiredError(
        f"{error}; {follow.name}@{current or '-'} stays current (audited once: later "
        "updates say `expired`, exit 3, until the publisher promotes again)"
    )


def _attempt(done: Updated, now: datetime) -> Attempt:
    """What ``packager status`` shows of one model's update."""
    error = done.error
    if error is None:
        detail = f"{done.previous or '-'} -> {done.version}" if done.status == "updated" else ""
        return Attempt(done.name, done.channel, now, done.status, done.version, 0, detail)
    detail = f"{type(error).__name__}: {error}"
    # An expired channel's model keeps serving its version: status shows which.
    return Attempt(done.name, done.channel, now, done.status, done.version, error.exit_code, detail)


def jitter(most: timedelta, *, say: Callable[[str], None] | None = None) -> float:
    """Sleep a random time up to ``most`` (uniform), so that a fleet started by the same
    timer does not reach the registry at once; returns the seconds slept."""
    delay = random.SystemRandom().uniform(0, most.total_seconds())
    if say is not None:
        say(f"waiting {delay:.0f} s before updating (jitter: at most {most.total_seconds():g} s)")
    time.sleep(delay)
    return delay


def _update_one(
    follow: Following,
    *,
    store: Store,
    now: datetime,
    open_registry: Callable[[str | None], RegistryReader],
    options: InstallOptions,
) -> InstallResult:
    """``install NAME@CHANNEL`` from the registry the model follows (install audits its own
    refusals; a registry that cannot be opened is audited here)."""
    source = options.registry_ref if options.registry_ref is not None else follow.registry
    try:
        registry = open_registry(source)
    except PackagerError as e:
        _audit_refusal(store, now, follow, e)
        raise
    return install(
        f"{follow.name}@{follow.channel}",
        registry=registry,
        store=store,
        now=now,
        options=replace(options, registry_ref=follow.registry),
    )


def _audit_refusal(store: Store, now: datetime, follow: Following, error: PackagerError) -> None:
    store.audit(
        action="channel",
        outcome="refused",
        now=now,
        name=follow.name,
        detail=f"{follow.channel}: {type(error).__name__}: {error}",
    )
