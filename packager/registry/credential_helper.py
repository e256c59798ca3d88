"""Docker credential helpers: ``docker-credential-<name> get``, as Docker runs them.

Docker's ``config.json`` may keep credentials out of the file: ``credHelpers`` names a
helper per registry host, ``credsStore`` one for every host. A helper is a program on
``PATH`` that reads the address Docker keys the registry by on stdin (its host, and for
Docker Hub ``https://index.docker.io/v1/``: :func:`packager.registry.auth.docker_config_key`)
and answers
``{"ServerURL": …, "Username": …, "Secret": …}`` on stdout, or exits non-zero with
``credentials not found in native keychain``.

The helper runs without a shell, with the environment less packager's own secrets, in a
session of its own (so that a timeout kills whatever it started), for at most
``timeout`` seconds; its stdout is read up to :data:`MAX_ANSWER` bytes and parsed
strictly. Its answer never appears in a message: a failure names the helper and quotes
at most the first line of its stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
from typing import IO

from packager.core.jsonio import Limits, loads_object
from packager.core.text import printable
from packager.errors import RegistryError

MAX_ANSWER = 64 << 10
DEFAULT_TIMEOUT = 30.0
NOT_FOUND = "credentials not found in native keychain"
# Docker's marker for an identity token (an OAuth refresh token) in place of a password.
IDENTITY_TOKEN_USER = "<token>"  # noqa: S105 - a marker, not a secret
# The environment variables that hold packager's own secrets: no helper needs them.
_OWN_SECRETS = ("PACKAGER_KEY_PASSWORD", "COSIGN_PASSWORD", "PACKAGER_REGISTRY_PASSWORD")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_USERNAME_RE = re.compile(r"[^\x00-\x1f\x7f:]{1,1024}")


def helper_credentials(
    helper: str,
    host: str,
    *,
    source: str,
    environ: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[str, str] | None:
    """(username, secret) that ``docker-credential-<helper> get`` has for ``host`` (the
    address Docker keys the registry by); None when the helper has none. ``source`` names
    the config entry in messages.

    Raises:
        RegistryError: the helper's name is not a plain name, it is not on ``PATH``,
            does not answer within ``timeout``, fails, or answers something that is not
            one set of credentials.
    """
    program = f"docker-credential-{helper}"
    if not _NAME_RE.fullmatch(helper):
        raise RegistryError(f"{source}: {printable(helper)!r} is not a credential helper name")
    env = dict(os.environ if environ is None else environ)
    path = shutil.which(program, path=env.get("PATH", os.defpath))
    if path is None:
        raise RegistryError(
            f"{source} names the credential helper {program}, which is not on PATH: "
            "install it, or remove it from the Docker config"
        )
    for name in _OWN_SECRETS:
        env.pop(name, None)
    code, out, err = _run(path, host, env, timeout, program)
    if code != 0:
        if out.strip() == NOT_FOUND.encode():
            return None
        detail = _first_line(err) or f"exit code {code}"
        raise RegistryError(f"{program} get failed for {host}: {detail}")
    return _parse(out, program, host)


def _run(
    path: str, host: str, env: dict[str, str], timeout: float, program: str
) -> tuple[int, bytes, bytes]:
    try:
        child = subprocess.Popen(  # a fixed argv, no shell
            [path, "get"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise RegistryError(f"cannot run {program}: {e.strerror or e}") from e
    assert child.stdin is not None
    assert child.stdout is not None
    assert child.stderr is not None
    out, err = _Capped(child.stdout), _Capped(child.stderr)
    try:
        try:
            child.stdin.write(host.encode())
            child.stdin.close()
        except BrokenPipeError:
            pass  # it did not read its input: its answer says why
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill(child)
        raise RegistryError(
            f"{program} get did not answer within {timeout:g} s for {host} "
            "(is it waiting for a keychain to be unlocked?)"
        ) from None
    except BaseException:
        _kill(child)
        raise
    finally:
        out.join()
        err.join()
    if out.over:
        raise RegistryError(f"{program} get answered more than {MAX_ANSWER} bytes for {host}")
    return child.returncode, out.data, err.data


def _parse(out: bytes, program: str, host: str) -> tuple[str, str]:
    def refused(message: str) -> RegistryError:
        # The message of the JSON parser names a position, never the bytes.
        return RegistryError(f"{program} get answered no credentials for {host}: {message}")

    doc = loads_object(out, what="its answer", error=refused, limits=Limits(max_bytes=MAX_ANSWER))
    username, secret = doc.get("Username"), doc.get("Secret")
    if not isinstance(secret, str) or not secret or not isinstance(username, str):
        raise refused("no Username and Secret strings")
    if username == IDENTITY_TOKEN_USER:
        raise RegistryError(
            f"{program} holds an identity token for {host}, which packager does not use: "
            "log in with a username and password or token (docker login -u USER)"
        )
    if not _USERNAME_RE.fullmatch(username) or any(c in secret for c in "\r\n\x00"):
        raise refused("a Username or Secret that cannot go into a Basic header")
    return username, secret


class _Capped:
    """Reads one of the child's pipes in a thread, keeping the first MAX_ANSWER + 1 bytes
    and discarding the rest, so that the child never blocks on a full pipe."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.data = b""
        self.over = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            self.data = stream.read(MAX_ANSWER + 1)
            if len(self.data) > MAX_ANSWER:
                self.over = True
                self.data = b""
                while stream.read(1 << 16):
                    pass

    def join(self) -> None:
        self._thread.join(5.0)


def _kill(child: subprocess.Popen[bytes]) -> None:
    """End the helper's session (the helper and anything it started), then reap it: only
    when it is late, as a helper may leave an agent running on purpose."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _first_line(err: bytes) -> str:
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return printable(lines[0]) if lines else ""
