"""How to reach a remote registry: credentials, TLS, timeouts, upload chunking, progress.

:class:`RegistryOptions` is built once at the edge (the CLI, or a service embedding
packager) and passed down keyword-only; nothing below it reads the environment.
:func:`options_from_environment` is the one place the environment variables are read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packager.errors import UsageError

USERNAME_ENV = "PACKAGER_REGISTRY_USERNAME"
PASSWORD_ENV = "PACKAGER_REGISTRY_PASSWORD"  # noqa: S105 - the name of a variable
# Blobs up to this size are uploaded in one PUT; larger ones in PATCH chunks of this size.
# 64 MiB stays under the request-body limits of the proxies usually put in front of
# registries (100 MB is common) while keeping the number of round trips small.
DEFAULT_CHUNK_SIZE = 64 << 20

_SIZE_RE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class Timeouts:
    """Network limits, in seconds.

    ``connect``: to open a connection; ``stall``: the longest wait for the next bytes of a
    response (a server that stops sending); ``deadline``: the whole of one request or
    download, retries and resumes included (a server that trickles forever).
    """

    connect: float = 10.0
    stall: float = 60.0
    deadline: float = 6 * 3600.0


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a request that failed on a connection error, a 5xx or a 429.

    Waits ``backoff * 2**attempt`` seconds between attempts, or what a 429/503
    ``Retry-After`` asks, but never longer than ``max_wait``.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_wait: float = 30.0


@dataclass(frozen=True)
class RegistryOptions:
    """Everything needed to talk to a remote registry; the password is never printed.

    ``docker_config`` is a Docker ``config.json`` whose ``auths`` are used when no
    username and password are given. ``progress`` asks for progress bars on stderr;
    the caller decides whether stderr is a terminal.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    docker_config: Path | None = None
    ca_cert: Path | None = None
    plain_http: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    progress: bool = False
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise UsageError(f"chunk size must be at least 1 byte, not {self.chunk_size}")
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise UsageError(
                f"registry {missing} missing: give --username with --password-stdin, "
                f"or set both {USERNAME_ENV} and {PASSWORD_ENV}"
            )
        if self.ca_cert is not None and not self.ca_cert.is_file():
            raise UsageError(f"--ca-cert {self.ca_cert} is not a file")


def parse_size(text: str) -> int:
    """``"1048576"``, ``"512K"``, ``"64M"``, ``"1GiB"`` -> bytes.

    Raises:
        UsageError: not a positive size.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()] if match else 0
    if size < 1:
        raise UsageError(f"invalid size {text!r}: use bytes or a K, M or G suffix, e.g. 64M")
    return size


def docker_config_path(environ: Mapping[str, str]) -> Path:
    """Where Docker keeps ``config.json``: ``$DOCKER_CONFIG`` or ``~/.docker``."""
    directory = environ.get("DOCKER_CONFIG")
    if directory:
        return Path(directory).expanduser() / "config.json"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker" / "config.json"


def options_from_environment(
    environ: Mapping[str, str] = os.environ,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_cert: Path | None = None,
    plain_http: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
) -> RegistryOptions:
    """Options from explicit values, then ``PACKAGER_REGISTRY_USERNAME``/``_PASSWORD``,
    then Docker's ``config.json`` (looked up per registry host when it is used).

    Raises:
        UsageError: only one of username and password is given, or a bad value.
    """
    return RegistryOptions(
        username=username if username is not None else environ.get(USERNAME_ENV) or None,
        password=password if password is not None else environ.get(PASSWORD_ENV) or None,
        docker_config=docker_config_path(environ),
        ca_cert=ca_cert,
        plain_http=plain_http,
        chunk_size=chunk_size,
        progress=progress,
    )
