"""What a user writes to name a model: ``name``, ``name@version``, ``name@channel`` (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from packager.core.manifest import check_name, check_version
from packager.core.semver import is_semver
from packager.errors import UsageError


@dataclass(frozen=True)
class Target:
    """What an install asks for: a version, a channel, or neither (the latest release)."""

    name: str
    version: str | None = None
    channel: str | None = None


def parse_target(ref: str) -> Target:
    """``name``, ``name@version``, or ``name@channel`` (what follows @ is not SemVer).

    Raises:
        UsageError: the name is malformed, or what follows @ is neither a version nor a
            channel name.
    """
    name, sep, rest = ref.partition("@")
    check_name(name)
    if not sep:
        return Target(name)
    if is_semver(rest):
        return Target(name, version=rest)
    from packager.core.channel import CHANNEL_RE  # here: a version needs no channel's rules

    if CHANNEL_RE.fullmatch(rest):
        return Target(name, channel=rest)
    raise UsageError(
        f"{rest!r} in {ref!r} is neither a version (Semantic Versioning, e.g. 1.2.0) nor a "
        "channel (a lowercase word, e.g. stable)"
    )


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name`` or ``name@version`` -> (name, version or None).

    Raises:
        UsageError: the name or version is malformed.
    """
    name, sep, version = ref.partition("@")
    check_name(name)
    if not sep:
        return name, None
    return name, check_version(version)
