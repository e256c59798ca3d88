"""The one exception hierarchy of packager.

Every failure a user can cause or meet is a subclass of :class:`PackagerError`;
the CLI catches it in exactly one place and turns it into a one-line message
and the exit code documented in the README. Messages say what happened and
what to do about it. Tampering is never a ``ValueError``.
"""

from __future__ import annotations

import errno


class PackagerError(Exception):
    """Root of every error packager raises on purpose."""

    exit_code = 1


class UsageError(PackagerError):
    """The command line, a file given on it, or the configuration is wrong."""

    exit_code = 2


class VerificationError(PackagerError):
    """A signature, digest, size or trust check failed: do not use the bundle."""

    exit_code = 3


class TamperedError(VerificationError):
    """Bytes differ from what was signed, or files are missing or extra."""


class UntrustedError(VerificationError):
    """The signature is valid or malformed, but no trusted key made it."""


class KeyDecryptionError(VerificationError):
    """A private key could not be decrypted (wrong password or corrupt key)."""


class RollbackError(VerificationError):
    """The version asked for is lower than one already installed."""


class ExpiredError(VerificationError):
    """A signed document is past its expiry: the registry may be freezing updates."""


class WrongModelError(VerificationError):
    """A validly signed bundle of another model or version was served."""


class RegistryError(PackagerError):
    """The registry could not be read or written (missing, network, conflict)."""

    exit_code = 4


class NotFoundError(RegistryError):
    """The model or version is not in the registry."""


class NotInstalledError(NotFoundError):
    """The model or version is not installed here: a usage error (exit 2), not a registry's.

    A :class:`NotFoundError` too, so callers of :func:`packager.load` catch it as before.
    """

    exit_code = 2


class LocalDiskError(PackagerError):
    """This machine's disk refused a write or read: read-only, full, or permission denied.

    Exit 2 like other local configuration problems: free space, or point ``--home`` (or
    the file named) at a place this account may write.
    """

    exit_code = 2


# What the local disk answers when it refuses: read-only, full, over quota, not permitted.
DISK_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM})


def disk_or(error: type[PackagerError], message: str, cause: OSError) -> PackagerError:
    """``LocalDiskError(message)`` when ``cause`` is the local disk refusing (see
    :data:`DISK_ERRNOS`), else ``error(message)``: a full disk is never a registry failure."""
    return LocalDiskError(message) if cause.errno in DISK_ERRNOS else error(message)


class IncompatibleModelError(PackagerError):
    """The model cannot be converted, loaded or run, or gave wrong answers."""

    exit_code = 5


class ConversionError(IncompatibleModelError):
    """The trained model could not be converted to ONNX."""


class ParityError(IncompatibleModelError):
    """ONNX answers differ from the original model's beyond tolerance."""


class SmokeTestError(IncompatibleModelError):
    """The installed runtime does not reproduce the bundle's test vectors."""


class LockTimeoutError(PackagerError):
    """Another install, rollback or removal of the model held its lock for too long."""

    exit_code = 4


class GateFailedError(PackagerError):
    """A benchmark gate limit was exceeded beyond the measurement noise."""

    exit_code = 6


# Every class here is part of the public API: packager re-exports them all.
__all__ = [
    "ConversionError",
    "ExpiredError",
    "GateFailedError",
    "IncompatibleModelError",
    "KeyDecryptionError",
    "LocalDiskError",
    "LockTimeoutError",
    "NotFoundError",
    "NotInstalledError",
    "PackagerError",
    "ParityError",
    "RegistryError",
    "RollbackError",
    "SmokeTestError",
    "TamperedError",
    "UntrustedError",
    "UsageError",
    "VerificationError",
    "WrongModelError",
]
