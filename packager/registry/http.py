"""Static mirrors: the embedded registry's directory served by any static web server.

``https://host/path`` (or ``http://`` to a loopback host, or with ``plain_http``) names a
copy of a registry directory published by nginx, S3, GitLab Pages or any server that
answers ``GET`` with a file's bytes:

```
<base>/models.json                     the model names (see render_models_index)
<base>/<name>/index.json               one manifest descriptor per version or document
<base>/<name>/blobs/sha256/<hex>
```
Static servers have no directory listing, so :meth:`StaticMirrorRegistry.names` needs
``models.json``; everything else works without it. A mirror is read-only: it is filled by
copying the directory (``rsync``, ``aws s3 sync``), never by publishing to it.

Everything goes through :class:`~packager.registry.transport.Transport`: timeouts, retries,
plain HTTP only where allowed, ``--ca-cert``, resumable downloads capped at the declared
size plus one byte. The server is untrusted: index.json and models.json are read with a
size cap, and every manifest and blob with its descriptor's size as a cap and its digest
checked here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads
from packager.core.manifest import NAME_RE, check_name, check_version
from packager.errors import NotFoundError, RegistryError, UsageError
from packager.registry._verified_read import IndexedStore, VerifiedRegistry
from packager.registry.auth import RegistryAuth, find_credentials
from packager.registry.base import Descriptor
from packager.registry.index import INDEX, MAX_INDEX_BYTES, OciIndex, parse_index
from packager.registry.layout import MAX_MODELS_INDEX_BYTES, MODELS_INDEX, semver_tag
from packager.registry.options import RegistryOptions
from packager.registry.transport import (
    BlobRequest,
    RemoteBlobs,
    Transport,
    header_number,
    where,
)

# What static servers answer for a file they do not have.
_MISSING = frozenset({404, 410})
# Compressed answers would hide a body's real size until it is decoded.
_IDENTITY = {"Accept-Encoding": "identity"}


def mirror_base(url: str) -> str:
    """``scheme://host[:port]/path`` of a mirror URL, checked.

    Raises:
        UsageError: not an http(s) URL with a host, credentials in it (the message never
            repeats them), or a query or fragment.
    """
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise UsageError(
            "put no credentials in the mirror URL: use --username and --password-stdin, "
            "or PACKAGER_REGISTRY_USERNAME/PASSWORD"
        )
    try:
        port_ok = parts.port != 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise UsageError(
            f"invalid mirror URL {parts.scheme}://{parts.netloc}{parts.path}: "
            "use https://HOST[:PORT]/PATH"
        )
    if parts.query or parts.fragment:
        raise UsageError(
            f"the mirror URL {parts.scheme}://{parts.netloc}{parts.path} must not have "
            "a query or fragment: name the directory the registry is served from"
        )
    return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


class HttpStore(RemoteBlobs, IndexedStore):
    """The files of a registry directory on a static web server, unchecked."""

    def __init__(self, url: str, *, options: RegistryOptions) -> None:
        self._base = mirror_base(url)
        self._options = options
        self._transport = Transport(options)
        self._auth = RegistryAuth(
            transport=self._transport,
            registry_url=self._base,
            credentials=find_credentials(urlsplit(self._base).netloc, options),
            plain_http=options.plain_http,
        )

    @property
    def location(self) -> str:
        return self._base

    check_name = staticmethod(check_name)
    version_tag = staticmethod(check_version)
    tag_version = staticmethod(semver_tag)

    def close(self) -> None:
        self._transport.close()

    def list_names(self) -> list[str]:
        """The model names ``models.json`` lists.

        Raises:
            RegistryError: the mirror has no models.json (static servers cannot list a
                directory, so name the model instead), or it is too large, malformed,
                or cannot be read.
        """
        what = f"list the models of {self.location}"
        data = self._get(MODELS_INDEX, limit=MAX_MODELS_INDEX_BYTES, what=what)
        if data is None:
            raise RegistryError(
                f"this mirror has no {MODELS_INDEX} to list its models ({self.location}); "
                f"`packager search NAME --registry {self.location}` still works"
            )

        def refused(reason: str) -> RegistryError:
            return RegistryError(
                f"cannot {what}: {MODELS_INDEX} is not a JSON list of model names ({reason}); "
                "copy it from the registry directory again"
            )

        names = loads(
            data, what=MODELS_INDEX, error=refused, limits=Limits(max_bytes=MAX_MODELS_INDEX_BYTES)
        )
        if not isinstance(names, list) or not all(
            isinstance(name, str) and NAME_RE.fullmatch(name) for name in names
        ):
            raise refused("not a list of model names")
        return names

    def missing_model(self, name: str) -> NotFoundError:
        return NotFoundError(
            f"model {name!r} not found in {self.location}; check the name, or run "
            f"`packager search --registry {self.location}` to list the models"
        )

    def blob_request(self, name: str, desc: Descriptor, what: str) -> BlobRequest:
        return BlobRequest(self._blob_url(name, desc.digest), desc, what, self._auth)

    def index(self, name: str) -> OciIndex | None:
        """``name``'s index.json, or None when the mirror has none."""
        what = f"read {INDEX} of {name} in {self.location}"
        data = self._get(f"{name}/{INDEX}", limit=MAX_INDEX_BYTES, what=what)
        if data is None:
            return None
        return parse_index(
            data,
            where=f"{INDEX} of {name} in {self.location}",
            hint="copy the registry directory again",
        )

    def _get(self, path: str, *, limit: int, what: str) -> bytes | None:
        """The body of ``<base>/<path>``, at most ``limit`` bytes; None when the server
        has no such file."""
        url = f"{self._base}/{path}"
        response = self._transport.request(
            "GET", url, what=what, headers=_IDENTITY, auth=self._auth
        )
        if response.status_code in _MISSING:
            response.close()
            return None
        if response.status_code != 200:
            raise self._transport.http_error(response, what, self._auth)
        # A declared length over the cap is refused before reading any of the body; an
        # undeclared or false one is cut at the cap plus one byte.
        declared = header_number(response.headers.get("Content-Length"))
        if declared is not None and declared > limit:
            response.close()
            raise _too_large(url, limit, what)
        data = self._transport.read(response, limit=limit, what=what, auth=self._auth)
        if len(data) > limit:
            raise _too_large(url, limit, what)
        return data

    def _blob_url(self, name: str, digest: Digest) -> str:
        return f"{self._base}/{name}/blobs/{digest.algorithm}/{digest.hex}"


class StaticMirrorRegistry(VerifiedRegistry):
    """A read-only registry at ``http(s)://host[:port]/path``; see the module doc.

    Nothing is sent before the first call. Mirrors are filled by copying the registry
    they mirror, never by publishing: this class has no write methods, and
    :func:`~packager.registry.open_destination` refuses a mirror URL.
    """

    def __init__(self, url: str, *, options: RegistryOptions) -> None:
        """Check the URL.

        Raises:
            UsageError: as :func:`mirror_base`, or a Docker config that cannot be read.
        """
        super().__init__(HttpStore(url, options=options))


def _too_large(url: str, limit: int, what: str) -> RegistryError:
    return RegistryError(f"cannot {what}: {where(url)} is larger than the {limit} bytes allowed")
