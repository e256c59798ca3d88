r"""Semantic Versioning 2.0.0 precedence (§11): which of two versions is higher.

Pure: strings in, comparable keys out. Validity is :func:`packager.core.manifest.is_version`:
the manifest's regular expression matched against the whole string, ASCII only and at most
128 characters (``re.match`` with ``$`` would accept a trailing newline, ``\d`` non-ASCII
digits, and a version of thousands of digits would make ``int()`` raise).
"""

from __future__ import annotations

from collections.abc import Iterable

from packager.core.manifest import SEMVER_RE, is_version
from packager.errors import UsageError

# A pre-release identifier as a key: numeric identifiers sort numerically and below
# alphanumeric ones, which sort in ASCII order (§11.4.1-3).
PrereleaseId = tuple[int, int, str]
# (major, minor, patch, release rank, pre-release identifiers). A release ranks 1 and a
# pre-release 0, so 1.0.0-rc.1 < 1.0.0 (§11.3); tuples compare element-wise and a
# shorter prefix is lower, which is exactly §11.4.4.
SemverKey = tuple[int, int, int, int, tuple[PrereleaseId, ...]]


def semver_key(version: str) -> SemverKey:
    """Return a key whose ordering is SemVer 2.0.0 precedence; build metadata is ignored.

    Raises:
        UsageError: ``version`` is not a Semantic Versioning 2.0.0 string.
    """
    match = SEMVER_RE.fullmatch(version) if is_version(version) else None
    if match is None:
        raise UsageError(f"invalid version {version!r}: use Semantic Versioning, e.g. 1.2.0")
    major, minor, patch, prerelease, _build = match.groups()
    if prerelease is None:
        return (int(major), int(minor), int(patch), 1, ())
    ids = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in prerelease.split(".")
    )
    return (int(major), int(minor), int(patch), 0, ids)


def is_semver(version: str) -> bool:
    """True when ``version`` is a Semantic Versioning 2.0.0 string."""
    return is_version(version)


def sort_versions(versions: Iterable[str]) -> list[str]:
    """Sort by SemVer precedence, lowest first.

    Versions of equal precedence (differing only in build metadata) are ordered by
    their text so that the result is deterministic.

    Raises:
        UsageError: one of ``versions`` is not Semantic Versioning 2.0.0.
    """
    return sorted(versions, key=lambda v: (semver_key(v), v))


def max_version(versions: Iterable[str]) -> str | None:
    """Return the highest version by SemVer precedence, or None when there is none.

    Raises:
        UsageError: one of ``versions`` is not Semantic Versioning 2.0.0.
    """
    ordered = sort_versions(versions)
    return ordered[-1] if ordered else None
