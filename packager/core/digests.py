"""SHA-256 digests as value objects (pure; hashing files is :mod:`packager._io.hashing`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from packager.errors import TamperedError

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Digest:
    """A sha256 digest; ``hex`` is 64 lowercase hex characters."""

    hex: str
    algorithm: str = "sha256"

    def __post_init__(self) -> None:
        if self.algorithm != "sha256" or not _HEX64.fullmatch(self.hex):
            raise TamperedError(f"malformed digest {self.algorithm}:{self.hex[:80]!r}")

    @classmethod
    def parse(cls, ref: str) -> Digest:
        """Parse ``sha256:<hex>``; raises TamperedError when malformed."""
        algorithm, _, value = ref.partition(":")
        return cls(hex=value, algorithm=algorithm)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        import hashlib  # here: loading OpenSSL costs every command's start, not only hashing

        return cls(hashlib.sha256(data).hexdigest())

    @property
    def raw(self) -> bytes:
        return bytes.fromhex(self.hex)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def digest_chunks(chunks: Iterable[bytes]) -> tuple[Digest, int]:
    """Hash an iterable of byte chunks; returns (digest, total size)."""
    import hashlib

    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    return Digest(h.hexdigest()), size
