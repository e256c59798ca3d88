"""Benchmark results published beside the version they measured, and their history.

:func:`publish_result` signs a result (:mod:`packager.core.benchrecord`) and attaches it
to the version in the registry (:mod:`packager.registry.attachments`), so that mirror and
export carry it like any attachment. :func:`history` reads back every result of every
version of a model, keeping those a trusted key signed for that exact bundle
(:func:`packager.core.verify.accept_benchmark_result`) and saying why others do not count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from packager.core.benchrecord import (
    KIND,
    MAX_RESULT_BYTES,
    BenchmarkResult,
    Entry,
    sign_result,
)
from packager.core.digests import Digest
from packager.core.manifest import MANIFEST
from packager.core.policy import TrustPolicy
from packager.core.semver import semver_key
from packager.core.statements import Subject
from packager.core.verify import accept_benchmark_result, served_file
from packager.errors import NotFoundError, TamperedError, VerificationError
from packager.registry.attachments import (
    get_attachment,
    list_attachments,
    put_attachment,
)
from packager.registry.base import Registry, RegistryReader


@dataclass(frozen=True)
class Published:
    """Where a result went: the version, the attachment's tag, the registry."""

    ref: str
    tag: str
    location: str


def publish_result(
    result: Mapping[str, Any],
    *,
    name: str,
    version: str,
    manifest_digest: Digest,
    registry: Registry,
    private_key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> Published:
    """Sign ``result`` (one model's ``packager benchmark --json``) and attach it to
    ``name``@``version`` in ``registry``; the version there must be the bundle measured
    (its manifest.json has ``manifest_digest``).

    Raises:
        NotFoundError: the registry has no such version.
        TamperedError: the registry's version is another bundle than the one measured.
        RegistryError: the registry cannot be read or written.
    """
    artifact = registry.resolve(name, version)
    served = served_file(artifact.files, MANIFEST).digest
    if served != manifest_digest:
        raise TamperedError(
            f"{registry.location} holds another {name}@{version} (manifest.json {served}) "
            f"than the bundle measured ({manifest_digest}); nothing was published"
        )
    record = BenchmarkResult(name, version, manifest_digest, now.replace(microsecond=0), result)
    data = sign_result(record, private_key=private_key)
    attached = put_attachment(registry, artifact, KIND, data)
    return Published(f"{name}@{version}", attached.tag, registry.location)


def history(registry: RegistryReader, name: str, policy: TrustPolicy) -> list[Entry]:
    """Every benchmark result attached to every version of ``name``, oldest version first
    and, within a version, in order of measurement; results that do not verify are listed
    with the reason and carry no figures. A version with more documents attached than
    packager reads (:func:`~packager.registry.attachments.attachments_in`) is one entry
    with the reason, and none of its results is read.

    Raises:
        UsageError: a malformed name.
        NotFoundError: no such model.
        RegistryError: the registry cannot be read.
    """
    entries = []
    for version in sorted(registry.versions(name), key=semver_key):
        artifact = registry.resolve(name, version)
        subject = Subject(name, version, served_file(artifact.files, MANIFEST).digest)
        try:
            listed = list_attachments(registry, artifact, KIND)
        except TamperedError as e:
            entries.append(Entry(version, "", problem=str(e)))
            continue
        found = []
        for attached in listed:
            try:
                data = get_attachment(registry, name, attached, max_size=MAX_RESULT_BYTES)
                result, hint = accept_benchmark_result(data, policy, subject)
                found.append(Entry(version, attached.tag, result, hint))
            except (VerificationError, NotFoundError) as e:
                found.append(Entry(version, attached.tag, problem=str(e)))
        epoch = datetime.min.replace(tzinfo=None)
        found.sort(key=lambda e: e.result.measured.replace(tzinfo=None) if e.result else epoch)
        entries += found
    return entries
