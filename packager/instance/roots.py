"""The root of trust on the instance: pinning a root, and refreshing root and delegations
from the registry before a bundle is verified (the rules: :mod:`packager.core.root`).

``packager trust pin-root root.json`` keeps a root document, verified by its own threshold,
in state.db. From then on every install and update (:func:`trusted_mode`) walks the
registry's ``root.<N+1>``, ``root.<N+2>``, … from the newest root accepted, refuses an
expired newest root, verifies the ``delegations`` document against it (not below the
version accepted before), records both, and verifies the bundle with ``trust.toml`` plus
the delegated keys (:func:`packager.core.root.delegated_policy`). Without a pinned root,
``trust.toml`` alone decides, as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from packager.core.policy import Trusted, TrustPolicy, VerifyMode
from packager.core.text import Progress
from packager.errors import PackagerError
from packager.instance.store import STATE_DB, Store
from packager.instance.trust import policy_path, resolve_policy
from packager.registry.base import RegistryReader

# packager.core.root and the registry's reader of its documents are imported by the
# functions that read a pinned root: most instances pin none, and every install asks.
if TYPE_CHECKING:
    from packager.core.root import Delegations, Root

_RECORD = """
INSERT INTO trust_documents (kind, version, data, at) VALUES (?, ?, ?, ?)
ON CONFLICT (kind) DO UPDATE SET version = excluded.version, data = excluded.data, at = excluded.at
"""


@dataclass(frozen=True)
class TrustState:
    """What an instance trusts: the newest root accepted (its bytes), and the version of
    the delegations accepted under it, if any."""

    root: Root
    root_bytes: bytes
    delegations_version: int | None


def trust_state(store: Store) -> TrustState | None:
    """The pinned (or since accepted) root and delegations version; None when no root is
    pinned."""
    if not (store.home / STATE_DB).exists():
        return None
    with store.db() as conn:
        return _state(conn)


def pin(store: Store, data: bytes, *, now: datetime) -> Root:
    """Pin root ``data`` on this instance: it must meet its own threshold and not be older
    than the root already trusted. A root that changes the delegations role resets the
    delegations floor.

    Raises:
        TamperedError: malformed. UntrustedError: its own threshold is not met.
        RollbackError: older than the root trusted here.
    """
    from packager.core.root import pin_root

    with store.db() as conn:
        state = _state(conn)
        root = pin_root(data, pinned=state.root if state else None)
        if state is not None and state.root.delegations != root.delegations:
            conn.execute("DELETE FROM trust_documents WHERE kind = 'delegations'")
        conn.execute(_RECORD, ("root", root.version, data, now.isoformat()))
    store.audit(action="trust", outcome="pinned", now=now, detail=f"root version {root.version}")
    return root


def trusted_mode(
    mode: VerifyMode,
    *,
    registry: RegistryReader,
    store: Store,
    now: datetime,
    name: str | None = None,
    progress: Progress | None = None,
) -> VerifyMode:
    """``mode`` with the registry's delegations added to its policy, when a root is pinned
    (else ``mode`` itself). Every refusal is written to the audit log (for model ``name``)
    before it is raised.

    Raises:
        VerificationError: a root that does not follow (threshold, version skipped or
            replayed), an expired newest root or delegations, delegations not signed by
            the newest root's delegation keys, or older than those accepted before.
        RegistryError: the registry cannot be read.
    """
    state = trust_state(store)
    if state is None or not isinstance(mode, Trusted):
        return mode
    try:
        root, delegations = _refresh(state, registry, store, now)
    except PackagerError as e:
        detail = f"{type(e).__name__}: {e}"
        store.audit(action="trust", outcome="refused", now=now, name=name, detail=detail)
        raise
    if progress is not None:
        what = f"delegations v{delegations.version}" if delegations else "no delegations"
        progress(f"root of trust: root v{root.version}, {what} from {registry.location}")
    if delegations is None:
        return mode
    from packager.core.root import delegated_policy

    return Trusted(delegated_policy(mode.policy, delegations))


def instance_policy(
    *,
    home: Path,
    trust_file: Path | None = None,
    key_paths: Sequence[Path] = (),
    refusing: str = "refusing to install unverified models",
) -> TrustPolicy:
    """:func:`packager.instance.trust.resolve_policy`, except that with a pinned root and
    no policy file the policy starts empty (the delegations fill it). ``refusing`` ends
    the message when there is neither.

    Raises:
        UsageError: no key, no policy and no pinned root (fail closed); a bad policy.
    """
    if (
        not key_paths
        and policy_path(home=home, explicit=trust_file) is None
        and trust_state(Store(home)) is not None
    ):
        return TrustPolicy({}, (), {}, "pinned root")
    return resolve_policy(home=home, trust_file=trust_file, key_paths=key_paths, refusing=refusing)


def _refresh(
    state: TrustState, registry: RegistryReader, store: Store, now: datetime
) -> tuple[Root, Delegations | None]:
    from packager.core.root import (
        DELEGATIONS_TAG,
        accept_delegations,
        check_fresh,
        delegations_floor,
    )
    from packager.registry.roots import read_trust_document, walk_roots

    chain = walk_roots(registry, state.root)
    newest = chain[-1][0] if chain else state.root
    check_fresh(newest, now=now)
    floor = delegations_floor(state.root, newest, state.delegations_version)
    data = read_trust_document(registry, DELEGATIONS_TAG)
    delegations = None if data is None else accept_delegations(newest, data, now=now, floor=floor)
    accepted = []
    with store.db() as conn:
        at = now.isoformat()
        if chain:
            conn.execute(_RECORD, ("root", newest.version, chain[-1][1], at))
            accepted.append(f"root version {newest.version} (was {state.root.version})")
            if floor is None:
                conn.execute("DELETE FROM trust_documents WHERE kind = 'delegations'")
        if data is not None and delegations is not None and delegations.version != floor:
            conn.execute(_RECORD, ("delegations", delegations.version, data, at))
            accepted.append(f"delegations version {delegations.version}")
    for detail in accepted:
        store.audit(action="trust", outcome="accepted", now=now, detail=detail)
    return newest, delegations


def _state(conn: sqlite3.Connection) -> TrustState | None:
    rows = dict(
        (str(kind), (int(version), bytes(data)))
        for kind, version, data in conn.execute("SELECT kind, version, data FROM trust_documents")
    )
    if "root" not in rows:
        return None
    from packager.core.root import pin_root

    data = rows["root"][1]
    delegations = rows.get("delegations")
    return TrustState(pin_root(data), data, None if delegations is None else delegations[0])
