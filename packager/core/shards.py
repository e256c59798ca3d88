"""Shards: one file cut into fixed-size pieces, each with its own sha256 (pure).

The OpenSSF model-signing format (OMS v1.0) can sign a model "by shards": every file is
cut at multiples of one shard size, each piece is a resource named ``path:start:end``
(``end`` excluded) with the sha256 of those bytes, and the predicate records
``{"method": "shards", "shard_size": N}``. SHA-256 is a chain, so one file's digest is
computed on one core; a file's shards are independent and hash on every core at once.

A file of at most one shard has the one resource ``path:0:size``, whose digest is the
sha256 of the whole file; an empty file has no shard at all.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads
from packager.errors import PackagerError, UsageError

MiB = 1 << 20
GiB = 1 << 30
# Bundles holding a file larger than SHARD_THRESHOLD are signed by shards of
# DEFAULT_SHARD_SIZE; others by whole files, which every OMS verifier (the
# `model_signing` command line too) checks.
DEFAULT_SHARD_SIZE = 256 * MiB
SHARD_THRESHOLD = 1 * GiB
# Smaller shards would only multiply resources (model.sig is capped at 1 MiB) and tasks.
MIN_SHARD_SIZE = 4096
EMPTY = Digest(hashlib.sha256(b"").hexdigest())


@dataclass(frozen=True)
class Shard:
    """Bytes ``[start, end)`` of one file and their sha256."""

    start: int
    end: int
    digest: Digest

    def describe(self, path: str) -> str:
        """``path`` bytes start-end, for messages."""
        return f"{path} bytes {self.start}-{self.end}"


def bounds(size: int, shard_size: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` of each shard of a ``size``-byte file: none when it is empty."""
    return [(start, min(start + shard_size, size)) for start in range(0, size, shard_size)]


def shard_name(path: str, start: int, end: int) -> str:
    """The OMS resource name of a shard: ``path:start:end``."""
    return f"{path}:{start}:{end}"


def split_shard_name(name: str) -> tuple[str, int, int] | None:
    """``(path, start, end)`` of a resource named ``path:start:end``; None when it is not
    one (decimal digits only, no sign or spaces)."""
    rest, _, end = name.rpartition(":")
    path, _, start = rest.rpartition(":")
    if not path or not (start.isdigit() and end.isdigit() and start.isascii() and end.isascii()):
        return None
    return path, int(start), int(end)


def algorithm_name(shard_size: int) -> str:
    """What OMS shard resources name their algorithm: ``sha256-sharded-N``."""
    return f"sha256-sharded-{shard_size}"


def check_shard_size(shard_size: int) -> int:
    """``shard_size``, if shards can be that size.

    Raises:
        UsageError: smaller than MIN_SHARD_SIZE bytes.
    """
    if shard_size < MIN_SHARD_SIZE:
        raise UsageError(f"shard size {shard_size} is too small: at least {MIN_SHARD_SIZE} bytes")
    return shard_size


def choose_shard_size(sizes: Iterable[int], requested: int | None = None) -> int | None:
    """The shard size to sign a bundle with, None for whole files.

    ``requested``: the caller's choice (0: whole files); otherwise DEFAULT_SHARD_SIZE when
    some file is larger than SHARD_THRESHOLD, else whole files.

    Raises:
        UsageError: ``requested`` is not a valid shard size (see :func:`check_shard_size`).
    """
    if requested is not None:
        return None if requested == 0 else check_shard_size(requested)
    return DEFAULT_SHARD_SIZE if any(size > SHARD_THRESHOLD for size in sizes) else None


_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": MiB, "GiB": GiB}


def parse_size(text: str) -> int:
    """A size in bytes from ``N`` or ``N`` followed by B, KiB, MiB or GiB (``256MiB``).

    Raises:
        UsageError: anything else.
    """
    number = text.strip()
    unit = number.lstrip("0123456789")
    digits = number[: len(number) - len(unit)]
    if not digits or unit.strip() not in _UNITS:
        raise UsageError(f"{text!r} is not a size: give bytes, or a number and KiB, MiB or GiB")
    return int(digits) * _UNITS[unit.strip()]


def mismatch(path: str, signed: Sequence[Shard], found: Sequence[Digest]) -> str | None:
    """Why the shard digests ``found`` (in file order) are not the ``signed`` ones, or None.

    The first differing shard is named, so that a message says where a file was changed.
    """
    if len(found) != len(signed):
        return f"{path} has {len(found)} shards, but {len(signed)} were signed"
    for shard, digest in zip(signed, found, strict=True):
        if shard.digest != digest:
            return f"{shard.describe(path)} were modified after signing (sha256 differs)"
    return None


@dataclass(frozen=True)
class Hashed:
    """What hashing one file gave: its size and the sha256 of each of its shards, in file
    order (one for a file hashed whole or of one shard, none for an empty file)."""

    size: int
    digests: tuple[Digest, ...]

    @property
    def whole(self) -> Digest | None:
        """The sha256 of the whole file, when known: None for a file of several shards."""
        if not self.digests:
            return EMPTY
        return self.digests[0] if len(self.digests) == 1 else None


def claimed_shard_size(sig: bytes) -> int | None:
    """The shard size ``model.sig`` claims to be signed with, UNAUTHENTICATED: it only
    chooses how files are hashed while the signature is checked, never what is trusted
    (a claim that does not hold makes the signature or the digests fail). None for a
    whole-file signature, or anything unreadable, or a size below MIN_SHARD_SIZE.

    Reads the JSON only (no cryptography), so that hashing can start at once.
    """
    try:
        bundle = loads(sig, what="model.sig", limits=Limits(max_bytes=1 << 20))
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True)
        record = loads(payload, what="the statement")["predicate"]["serialization"]
        if record["method"] != "shards":
            return None
        size = record["shard_size"]
    except (PackagerError, ValueError, KeyError, TypeError):
        return None
    if isinstance(size, float) and size.is_integer() and size < 2**53:
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SHARD_SIZE:
        return None
    return size
