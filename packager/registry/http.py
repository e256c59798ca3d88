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

import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packager.core.digests import Digest
from packager.core.manifest import NAME_RE, Manifest, check_name, check_version
from packager.core.semver import is_semver, sort_versions
from packager.errors import NotFoundError, RegistryError, TamperedError, UsageError
from packager.registry.artifact import (
    MAX_OCI_MANIFEST_BYTES,
    OCI_MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION,
    parse_descriptor,
    parse_oci_manifest,
)
from packager.registry.auth import RegistryAuth, find_credentials
from packager.registry.base import Artifact, Descriptor
from packager.registry.document import (
    MAX_DOCUMENT_MANIFEST_BYTES,
    check_document_tag,
    parse_document_manifest,
)
from packager.registry.layout import (
    INDEX,
    MAX_INDEX_BYTES,
    MAX_MODELS_INDEX_BYTES,
    MODELS_INDEX,
    REF_NAME_ANNOTATION,
)
from packager.registry.options import RegistryOptions
from packager.registry.transport import Transport, progress_bar, where

# What static servers answer for a file they do not have.
_MISSING = frozenset({404, 410})
# Compressed answers would hide a body's real size until it is decoded.
_IDENTITY = {"Accept-Encoding": "identity"}


class StaticMirrorRegistry:
    """A read-only registry at ``http(s)://host[:port]/path``; see the module doc."""

    def __init__(self, url: str, *, options: RegistryOptions) -> None:
        """Check the URL; nothing is sent before the first call.

        Raises:
            UsageError: not an http(s) URL with a host, credentials in it (the message
                never repeats them), a query or fragment, or a Docker config that cannot
                be read.
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
        self._base = f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
        self._options = options
        self._transport = Transport(options)
        self._auth = RegistryAuth(
            transport=self._transport,
            registry_url=self._base,
            credentials=find_credentials(parts.netloc.lower(), options),
        )

    def __repr__(self) -> str:
        return f"StaticMirrorRegistry({self.location!r})"

    @property
    def location(self) -> str:
        return self._base

    def publish(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Mirrors are filled by copying the registry they mirror, not by publishing.

        Raises:
            UsageError: always; the message says where to publish instead.
        """
        raise UsageError(
            f"{self.location} is a read-only mirror; publish {manifest.ref} to the registry "
            "it mirrors and copy that directory to the web server again"
        )

    def put_document(self, name: str, tag: str, data: bytes, *, artifact_type: str) -> Digest:
        """Mirrors are filled by copying the registry they mirror, not by writing to them.

        Raises:
            UsageError: always; the message says where to write instead.
        """
        raise UsageError(
            f"{self.location} is a read-only mirror; publish {name}:{tag} to the registry "
            "it mirrors and copy that directory to the web server again"
        )

    def names(self) -> list[str]:
        """The model names ``models.json`` lists, sorted.

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
        try:
            names = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            names = None
        if not isinstance(names, list) or not all(
            isinstance(name, str) and NAME_RE.fullmatch(name) for name in names
        ):
            raise RegistryError(
                f"cannot {what}: {MODELS_INDEX} is not a JSON list of model names; "
                "copy it from the registry directory again"
            )
        return sorted(set(names))

    def versions(self, name: str) -> list[str]:
        """Every version of ``name``, by SemVer precedence; empty when the mirror has no
        such model. Tags that are not versions (documents, other tools') are left out.

        Raises:
            UsageError: ``name`` is not a valid model name.
            RegistryError: index.json is too large, corrupt or cannot be read.
        """
        return sort_versions(tag for tag in self.tags(name) if is_semver(tag))

    def tags(self, name: str) -> list[str]:
        """Every tag in ``name``'s index.json (versions, documents, other tools' tags),
        sorted; empty when the mirror has no such model.

        Raises:
            UsageError: ``name`` is not a valid model name.
            RegistryError: index.json is too large, corrupt or cannot be read.
        """
        refs = {_ref_name(entry) for entry in self._index(name) or []}
        return sorted(ref for ref in refs if ref is not None)

    def resolve(self, name: str, version: str) -> Artifact:
        """Fetch and check the OCI manifest index.json tags as ``version``.

        Raises:
            UsageError: ``name`` or ``version`` is malformed.
            NotFoundError: the model or version is not in the mirror.
            TamperedError: the manifest is not what its descriptor says or not a model.
            RegistryError: index.json is too large or corrupt, or the mirror cannot be read.
        """
        check_version(version)
        desc = self._tagged(name, version)
        if desc is None:
            raise NotFoundError(
                f"model {name!r} version {version} not found in {self.location}; "
                f"run `packager search {name} --registry {self.location}` to list its versions"
            )
        data = self.read_blob(name, desc, max_size=MAX_OCI_MANIFEST_BYTES)
        return parse_oci_manifest(data, name=name, version=version, digest=desc.digest)

    def read_blob(self, name: str, desc: Descriptor, *, max_size: int) -> bytes:
        """Download a small blob into memory, checking size and digest; see
        :class:`~packager.registry.base.Registry`.

        Raises:
            UsageError: ``name`` is not a valid model name.
            TamperedError: ``desc.size`` is over ``max_size``, or the bytes differ.
            RegistryError: the blob is missing or cannot be read.
        """
        check_name(name)
        if desc.size > max_size:
            raise TamperedError(
                f"blob {desc.digest} of {name} declares {desc.size} bytes, "
                f"more than the {max_size} allowed"
            )
        sink = io.BytesIO()
        self._transport.download(
            self._blob_url(name, desc.digest),
            sink,
            size=desc.size,
            digest=desc.digest,
            what=f"fetch blob {desc.digest} of {name}",
            auth=self._auth,
        )
        return sink.getvalue()

    def fetch_blob(self, name: str, desc: Descriptor, dest: Path) -> None:
        """Stream a blob into the new file ``dest``, resuming after dropped connections;
        see :class:`~packager.registry.base.Registry`.

        Raises:
            UsageError: ``name`` is not a valid model name.
            TamperedError: the bytes differ from the descriptor (``dest`` is removed).
            RegistryError: the blob is missing or cannot be read, or ``dest`` exists or
                cannot be written.
        """
        check_name(name)
        title = desc.annotations.get(TITLE_ANNOTATION, desc.digest.hex[:12])
        with progress_bar(
            f"fetching {title}", desc.size, enabled=self._options.progress
        ) as progress:
            self._transport.download_file(
                self._blob_url(name, desc.digest),
                dest,
                size=desc.size,
                digest=desc.digest,
                what=f"fetch {title} ({desc.digest}) of {name}",
                auth=self._auth,
                progress=progress,
            )

    def get_document(self, name: str, tag: str, *, artifact_type: str, max_size: int) -> bytes:
        """The document tagged ``tag`` in ``name``'s index.json; see
        :class:`~packager.registry.base.Registry`.

        Raises:
            UsageError: ``name`` or ``tag`` is malformed.
            NotFoundError: the model or the tag is not in the mirror.
            TamperedError: a manifest over 64 KiB, not of ``artifact_type`` or not one
                document layer; a layer over ``max_size``; bytes that differ from a
                descriptor.
            RegistryError: index.json is too large or corrupt, or the mirror cannot be read.
        """
        check_document_tag(tag)
        desc = self._tagged(name, tag)
        if desc is None:
            raise NotFoundError(f"no {tag} for {name} in {self.location}")
        data = self.read_blob(name, desc, max_size=MAX_DOCUMENT_MANIFEST_BYTES)
        layer = parse_document_manifest(
            data,
            digest=desc.digest,
            artifact_type=artifact_type,
            where=f"{name}:{tag} in {self.location}",
        )
        return self.read_blob(name, layer, max_size=max_size)

    def _tagged(self, name: str, tag: str) -> Descriptor | None:
        """The OCI manifest descriptor index.json tags ``tag``, or None when none is.

        Raises:
            NotFoundError: the mirror has no model ``name``.
        """
        entries = self._index(name)
        if entries is None:
            raise NotFoundError(
                f"model {name!r} not found in {self.location}; check the name, or run "
                f"`packager search --registry {self.location}` to list the models"
            )
        where = f"{INDEX} of {name} in {self.location}"
        matches = {str(entry.get("digest")): entry for entry in entries if _ref_name(entry) == tag}
        if not matches:
            return None
        if len(matches) > 1:
            raise RegistryError(
                f"{where} tags {tag} more than once; fix the registry it mirrors and copy it again"
            )
        desc = parse_descriptor(next(iter(matches.values())), where=where)
        if desc.media_type != OCI_MANIFEST_MEDIA_TYPE:
            raise TamperedError(f"{where}: {tag} is a {desc.media_type}, not an OCI manifest")
        return desc

    def _index(self, name: str) -> list[dict[str, Any]] | None:
        """The manifest descriptors of ``name``'s index.json, or None when there is none."""
        check_name(name)
        what = f"read {INDEX} of {name} in {self.location}"
        data = self._get(f"{name}/{INDEX}", limit=MAX_INDEX_BYTES, what=what)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
            raise RegistryError(
                f"cannot {what}: it is not an OCI image index; copy the registry directory again"
            )
        return manifests

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
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise _too_large(url, limit, what)
        data = self._transport.read(response, limit=limit, what=what, auth=self._auth)
        if len(data) > limit:
            raise _too_large(url, limit, what)
        return data

    def _blob_url(self, name: str, digest: Digest) -> str:
        return f"{self._base}/{name}/blobs/{digest.algorithm}/{digest.hex}"


def _too_large(url: str, limit: int, what: str) -> RegistryError:
    return RegistryError(f"cannot {what}: {where(url)} is larger than the {limit} bytes allowed")


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    ref = annotations.get(REF_NAME_ANNOTATION) if isinstance(annotations, dict) else None
    return ref if isinstance(ref, str) else None
