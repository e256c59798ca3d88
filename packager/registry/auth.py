"""Registry authentication: anonymous, HTTP Basic, and the Bearer token flow.

Credentials come from :class:`~packager.registry.options.RegistryOptions` (a username and
password given on the command line or in ``PACKAGER_REGISTRY_USERNAME``/``_PASSWORD``),
or else from Docker's ``config.json``: the credential helper it names for the host
(``credHelpers``, else ``credsStore``; see :mod:`packager.registry.credential_helper`), else
its ``auths``. Identity tokens are not used.

The flow is the one distribution registries use: a request goes out with whatever is
known; a 401 carries ``WWW-Authenticate``. ``Basic`` means: resend with the credentials.
``Bearer realm=…,service=…,scope=…`` means: get a token from ``realm`` (sending the
credentials there, if any) and resend with it. Tokens are cached per scope and reused
until they expire, so a publish or an install asks for one token, not one per request.

Secrets never leave this module except in an ``Authorization`` header where
:func:`~packager.registry.transport.may_send_credentials` allows (the registry's own
``host:port``, or a token realm it named over TLS; the transport applies that rule to
every request): not in ``repr``, messages (see :meth:`RegistryAuth.redact`), logs or
state. Only the registry's own 401s are answered: a challenge from a redirect target or
from another host a listing links to is an answer like any other.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from packager.core.jsonio import Limits, loads, loads_object
from packager.errors import RegistryError, UsageError
from packager.registry.credential_helper import DEFAULT_TIMEOUT, helper_credentials
from packager.registry.http11 import Response
from packager.registry.options import RegistryOptions
from packager.registry.transport import Transport, host_port, may_send_credentials, where

MAX_CONFIG_BYTES = 1 << 20
MAX_TOKEN_RESPONSE = 1 << 20
# How to give credentials, in messages.
GIVE = (
    "pass --username and --password-stdin, set PACKAGER_REGISTRY_USERNAME and "
    "PACKAGER_REGISTRY_PASSWORD, or log in with docker login"
)
# Docker keeps Docker Hub's credentials (in ``auths``, ``credHelpers`` and the helpers'
# stores) under the address of its v1 index, whichever name the registry goes by: the
# docker client's ``registry.IndexServer``.
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# The token specification's default when a token server does not say.
DEFAULT_TOKEN_LIFETIME = 60.0

_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(rf"[\s,]*({_TCHARS})(?:\s+|$)")
_PARAM_RE = re.compile(rf'\s*({_TCHARS})\s*=\s*("(?:[^"\\]|\\.)*"|{_TCHARS})\s*(?:,|$)')
# A token goes into a header line: visible ASCII only, so a hostile token server cannot
# inject headers.
_HEADER_SAFE_RE = re.compile(r"[\x21-\x7e]{1,16384}")


@dataclass(frozen=True)
class Credentials:
    """A username and password, and where they came from (for messages); the password
    is left out of ``repr``."""

    username: str
    password: str = field(repr=False)
    source: str = "the username and password given"

    @property
    def basic(self) -> str:
        """The value of an ``Authorization: Basic`` header."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def find_credentials(host: str, options: RegistryOptions) -> Credentials | None:
    """Credentials for ``host`` (``name[:port]``): the options', else Docker's config.

    Raises:
        UsageError: the Docker config exists but cannot be read or parsed.
    """
    if options.username is not None and options.password is not None:
        return Credentials(options.username, options.password)
    if options.docker_config is None:
        return None
    return docker_credentials(host, options.docker_config)


def docker_credentials(
    host: str, config: Path, *, helper_timeout: float = DEFAULT_TIMEOUT
) -> Credentials | None:
    """Credentials for ``host`` from a Docker ``config.json``, as Docker finds them: the
    helper ``credHelpers`` names for the host, else the ``credsStore`` helper, else the
    ``auths`` entry; None when the file, the helper's or the host's entry has none.

    Keys may be ``host[:port]`` or a URL (``https://host/v1/``); an ``auths`` entry holds
    ``auth`` (base64 of ``user:password``) or ``username`` and ``password``. Docker Hub,
    by any of its names (:data:`DOCKER_HUB_HOSTS`), is found under
    :data:`DOCKER_HUB_KEY`, and a helper is asked for that address
    (:func:`docker_config_key`), as the docker client does.

    Raises:
        UsageError: the file cannot be read, is not JSON, or the entry is malformed.
        RegistryError: a credential helper is missing, late, fails or answers nonsense.
    """
    try:
        with open(config, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UsageError(f"cannot read Docker config {config}: {e.strerror}") from e
    if len(data) > MAX_CONFIG_BYTES:
        return None

    def invalid(message: str) -> UsageError:
        return UsageError(f"{message}: fix or remove it")

    doc = loads(
        data,
        what=f"Docker config {config}",
        error=invalid,
        limits=Limits(max_bytes=MAX_CONFIG_BYTES),
    )
    if not isinstance(doc, dict):
        return None
    helper, source = _helper_for(host, doc, config)
    if helper is not None:
        found = helper_credentials(
            helper, docker_config_key(host), source=source, timeout=helper_timeout
        )
        return None if found is None else Credentials(*found, source=f"docker-credential-{helper}")
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return None
    entry = next((v for k, v in auths.items() if _config_host(k) == _config_host(host)), None)
    if not isinstance(entry, dict):
        return None
    source = f"{config} (auths.{host})"
    username, password = entry.get("username"), entry.get("password")
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            username, sep, password = (
                base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError) as e:
            raise UsageError(f"{source}: 'auth' is not base64 of user:password") from e
        if not sep:
            raise UsageError(f"{source}: 'auth' is not base64 of user:password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password, source)
    return None


def _helper_for(host: str, doc: dict[str, object], config: Path) -> tuple[str | None, str]:
    """The credential helper Docker would run for ``host`` and the entry naming it."""
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if _config_host(key) == _config_host(host) and isinstance(name, str) and name:
                return name, f"{config} (credHelpers.{host})"
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return store, f"{config} (credsStore)"
    return None, ""


def merge_scopes(scopes: list[str]) -> list[str]:
    """One ``type:name:actions`` per resource, with the union of the actions asked for:
    ``repository:a:pull`` and ``repository:a:pull,push`` -> ``repository:a:pull,push``."""
    merged: dict[str, list[str]] = {}
    for scope in scopes:
        resource, sep, actions = scope.rpartition(":")
        if not sep:  # not type:name:actions: passed on as it is
            merged.setdefault(scope, [])
            continue
        wanted = merged.setdefault(resource, [])
        wanted += [a for a in actions.split(",") if a and a not in wanted]
    return [f"{r}:{','.join(a)}" if a else r for r, a in merged.items()]


def docker_config_key(host: str) -> str:
    """The address Docker keeps the credentials of ``host`` (``name[:port]``) under:
    :data:`DOCKER_HUB_KEY` for Docker Hub, else ``host`` itself."""
    return DOCKER_HUB_KEY if host.lower() in DOCKER_HUB_HOSTS else host


def _config_host(key: str) -> str:
    # "https://registry.example:5000/v1/" and "registry.example:5000" name the same host;
    # every name of Docker Hub names Docker Hub.
    host = (urlsplit(key).netloc if "://" in key else key.partition("/")[0]).lower()
    return DOCKER_HUB_KEY if host in DOCKER_HUB_HOSTS else host


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """``WWW-Authenticate`` -> [(lowercase scheme, {lowercase param: value})], in order."""
    challenges: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while (scheme := _SCHEME_RE.match(header, pos)) is not None:
        pos = scheme.end()
        params: dict[str, str] = {}
        while (param := _PARAM_RE.match(header, pos)) is not None:
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        challenges.append((scheme.group(1).lower(), params))
    return challenges


@dataclass(frozen=True)
class _Token:
    value: str
    expires: float


class RegistryAuth:
    """The :class:`~packager.registry.transport.Authenticator` of one registry host.

    Thread-safe: parallel downloads share one token per scope.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        registry_url: str,
        credentials: Credentials | None,
        plain_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``plain_http``: the user asked for plain HTTP to this registry (--plain-http),
        so that credentials may go to it without TLS."""
        self._transport = transport
        self._registry = registry_url
        self._endpoint = host_port(registry_url)
        self._credentials = credentials
        # Anonymous tokens are no one's secret: without credentials, plain HTTP to the
        # registry carries nothing to protect.
        self._plain_http = plain_http or credentials is None
        # Token realms the registry named over TLS; replaced, never changed in place, as
        # other threads read it without the lock.
        self._realms: frozenset[str] = frozenset()
        self._clock = clock
        self._lock = threading.Lock()
        self._basic = False
        self._tokens: dict[str, _Token] = {}

    def __repr__(self) -> str:
        host, port = self._endpoint
        who = "anonymous" if self._credentials is None else "with credentials"
        return f"RegistryAuth({host}:{port}, {who})"

    def authorize(self, url: str, scope: str | None) -> Mapping[str, str]:
        """The ``Authorization`` header for ``url``; none for another host, so a blob
        redirected to storage elsewhere never receives the registry's credentials."""
        if host_port(url) != self._endpoint:
            return {}
        with self._lock:
            token = self._tokens.get(scope or "")
            if token is not None and self._clock() < token.expires:
                return {"Authorization": f"Bearer {token.value}"}
            if self._basic and self._credentials is not None:
                return {"Authorization": self._credentials.basic}
        return {}

    def may_send(self, url: str, *, origin: str) -> bool:
        return may_send_credentials(
            url,
            origin=origin,
            registry=self._registry,
            realms=self._realms,
            plain_http=self._plain_http,
        )

    def challenge(self, response: Response, scope: str | None) -> bool:
        """Answer a 401 of the registry's own: True when the request should be sent
        again. A 401 from any other host is not answered.

        Raises:
            RegistryError: the token service refused the credentials or failed.
        """
        if host_port(response.url) != self._endpoint:
            return False
        if self._credentials is not None and not self.may_send(response.url, origin=response.url):
            raise RegistryError(
                f"{where(response.url)} asks for credentials over plain HTTP, where anyone "
                "on the way (or a local user on that port) could read them: use HTTPS, or "
                "pass --plain-http if you mean it"
            )
        challenges = dict(parse_challenges(response.headers.get("WWW-Authenticate", "")))
        bearer = challenges.get("bearer")
        with self._lock:
            if bearer is not None and bearer.get("realm"):
                realm = bearer["realm"]
                if urlsplit(response.url).scheme == "https":
                    self._realms |= {realm}
                if self._credentials is not None and not self.may_send(realm, origin=realm):
                    raise RegistryError(
                        f"{where(response.url)} names the token service "
                        f"{urlsplit(realm).scheme}://{where(realm)}: credentials go only to "
                        "a token service on HTTPS that the registry names over HTTPS"
                    )
                self._tokens[scope or ""] = self._fetch_token(bearer, scope)
                return True
            if "basic" in challenges and self._credentials is not None and not self._basic:
                self._basic = True
                return True
            return False

    def advice(self) -> str:
        if self._credentials is None:
            return f"it needs credentials: {GIVE}"
        return f"check the credentials from {self._credentials.source}"

    def redact(self, text: str) -> str:
        """``text`` without the password, its Basic form or any token."""
        secrets = [token.value for token in list(self._tokens.values())]
        if self._credentials is not None:
            secrets += [self._credentials.password, self._credentials.basic.split(" ")[1]]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def _fetch_token(self, bearer: Mapping[str, str], scope: str | None) -> _Token:
        realm = bearer["realm"]
        # The registry's scope says what this request needs; ours, what the operation
        # will need next (push after the first pull check): ask for both at once.
        scopes = merge_scopes([*(scope or "").split(), *bearer.get("scope", "").split()])
        params = [("scope", s) for s in scopes]
        if bearer.get("service"):
            params.insert(0, ("service", bearer["service"]))
        what = f"get a registry token from {where(realm)}"
        separator = "&" if urlsplit(realm).query else "?"
        response = self._transport.request(
            "GET",
            f"{realm}{separator}{urlencode(params)}",
            what=what,
            headers={"Accept": "application/json"},
            auth=_RealmAuth(self, self._credentials),
        )
        if response.status_code in (401, 403):
            response.close()
            if self._credentials is None:
                raise RegistryError(f"{where(realm)} gives no anonymous access: {GIVE}")
            raise RegistryError(
                f"{where(realm)} refused the credentials from {self._credentials.source}; "
                "check the username and password (or token)"
            )
        if response.status_code != 200:
            raise self._transport.http_error(response, what, self)
        body = self._transport.read(response, limit=MAX_TOKEN_RESPONSE, what=what, auth=self)
        return self._parse_token(body, what)

    def _parse_token(self, body: bytes, what: str) -> _Token:
        def refused(message: str) -> RegistryError:
            return RegistryError(f"cannot {what}: {message}")

        doc = loads_object(
            body,
            what="the answer",
            error=refused,
            limits=Limits(max_bytes=MAX_TOKEN_RESPONSE),
        )
        value = doc.get("token") or doc.get("access_token")
        if not isinstance(value, str) or not _HEADER_SAFE_RE.fullmatch(value):
            raise RegistryError(f"cannot {what}: the answer holds no usable token")
        lifetime = doc.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        # Renew a little early so that a token never expires between check and use.
        lifetime -= min(30.0, lifetime / 10)
        return _Token(value, self._clock() + lifetime)


class _RealmAuth:
    """What a token realm is sent: the Basic credentials, under the rule of the registry's
    :class:`RegistryAuth`; a realm's own 401 is not answered."""

    def __init__(self, registry: RegistryAuth, credentials: Credentials | None) -> None:
        self._registry = registry
        self._credentials = credentials

    def authorize(self, url: str, scope: str | None) -> Mapping[str, str]:
        return {} if self._credentials is None else {"Authorization": self._credentials.basic}

    def challenge(self, response: Response, scope: str | None) -> bool:
        return False

    def redact(self, text: str) -> str:
        return self._registry.redact(text)

    def advice(self) -> str:
        return self._registry.advice()

    def may_send(self, url: str, *, origin: str) -> bool:
        return self._registry.may_send(url, origin=origin)
