"""Any OCI distribution registry: ``oci://host[:port]/namespace``.

Each model is the repository ``<namespace>/<name>``; each version a tag holding the OCI
artifact of :mod:`packager.registry.artifact`. SemVer build metadata (``1.0.0+build.7``)
is not allowed in a tag, so ``+`` is written as ``_`` (what other OCI tools do with
SemVer), and read back the same way: ``_`` cannot occur in a SemVer string, so the
mapping is reversible.

The registry is untrusted: the client computes the digest of every manifest and blob it
reads and checks sizes itself (distribution does not), never relying on
``Docker-Content-Digest`` alone.

Endpoints (OCI distribution spec 1.1): ``HEAD``/``GET /v2/<repo>/blobs/<digest>``,
``POST /v2/<repo>/blobs/uploads/`` (with ``?mount=&from=`` to mount), ``PATCH`` chunks,
``PUT …?digest=``, ``GET``/``PUT /v2/<repo>/manifests/<tag>``, ``GET /v2/<repo>/tags/list``
and ``GET /v2/_catalog``, paginated by ``Link`` headers.

Documents (signed channels) are OCI 1.1 artifacts in the model's repository, tagged with
names that are never versions (``channel.stable``); see :mod:`packager.registry.document`.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Unpack
from urllib.parse import urljoin, urlsplit

from packager.core.digests import Digest
from packager.core.jsonio import Limits, loads
from packager.core.manifest import NAME_RE, Manifest, check_name, check_version
from packager.core.semver import is_semver
from packager.errors import RegistryError, TamperedError, UsageError
from packager.registry._verified_read import Tagged, VerifiedRegistry
from packager.registry.artifact import (
    MAX_OCI_MANIFEST_BYTES,
    OCI_MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION,
    plan_artifact,
)
from packager.registry.auth import RegistryAuth, find_credentials
from packager.registry.base import Artifact, Descriptor
from packager.registry.document import Document, DocumentWriter
from packager.registry.http11 import Response
from packager.registry.options import RegistryOptions
from packager.registry.transport import (
    BlobRequest,
    Body,
    Progress,
    RemoteBlobs,
    Sent,
    Transport,
    header_number,
    is_loopback,
    progress_bar,
)

SCHEME = "oci://"
# Tag and repository grammar of the distribution spec.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
_HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?", re.ASCII)
# Listings are JSON arrays of short strings; a page this large is not a listing. A
# listing's pages together are held to these caps too: a registry whose pages link on
# forever is refused, not followed.
MAX_LIST_BYTES = 16 << 20
MAX_LISTING_BYTES = 64 << 20
MAX_LISTED = 100_000
MAX_PAGES = 1_000
_LIST_LIMITS = Limits(max_bytes=MAX_LIST_BYTES)
CATALOG_SCOPE = "registry:catalog:*"
UPLOAD_ACCEPTED = frozenset({201, 202, 204})
# What a registry answers when it does not implement chunked uploads.
PATCH_REFUSED = frozenset({405, 501})


def version_tag(version: str) -> str:
    """The tag of ``version``: ``+`` (not allowed in tags) becomes ``_``.

    Raises:
        UsageError: not a SemVer version, or longer than a tag may be (128).
    """
    tag = check_version(version).replace("+", "_")
    if not _TAG_RE.fullmatch(tag):
        raise UsageError(f"version {version!r} is too long for an OCI tag (128 characters)")
    return tag


def tag_version(tag: str) -> str | None:
    """The version a tag holds, or None for tags that are not versions (``latest``…)."""
    version = tag.replace("_", "+")
    return version if is_semver(version) else None


def parse_reference(ref: str) -> tuple[str, str]:
    """``oci://host[:port]/namespace`` -> (``host[:port]``, ``namespace``).

    Raises:
        UsageError: not an oci:// reference, credentials in it, or a malformed host or
            namespace. Messages never repeat what stands before an ``@``.
    """
    if not ref.startswith(SCHEME):
        raise UsageError(f"not an OCI registry reference: {ref!r} (use oci://host/namespace)")
    rest = ref[len(SCHEME) :]
    host, _, namespace = rest.partition("/")
    if "@" in host:
        raise UsageError(
            "put no credentials in the registry reference: use --username and "
            "--password-stdin, PACKAGER_REGISTRY_USERNAME/PASSWORD, or docker login"
        )
    namespace = namespace.strip("/")
    if not _HOST_RE.fullmatch(host):
        raise UsageError(f"invalid registry host {host!r} in {ref!r}")
    if (
        "?" in namespace
        or "#" in namespace
        or not all(_COMPONENT_RE.fullmatch(part) for part in namespace.split("/") if namespace)
    ):
        raise UsageError(
            f"invalid namespace {namespace!r} in {ref!r}: use lowercase path components "
            "of letters and digits separated by '.', '_' or '-', e.g. oci://host/team/models"
        )
    return host.lower(), namespace


class OciStore(RemoteBlobs):
    """The blobs, manifests and tags of an OCI distribution registry, unchecked; and the
    requests that write to it.

    The token cache is locked and each transfer keeps its own state, so that layers can
    be downloaded in parallel through one store.
    """

    def __init__(self, ref: str, *, options: RegistryOptions) -> None:
        """Parse ``oci://host[:port]/namespace``; nothing is sent before the first call.

        Raises:
            UsageError: a malformed reference, or a Docker config that cannot be read.
        """
        self._host, self._namespace = parse_reference(ref)
        self._options = options
        self._transport = Transport(options)
        self._credentials = find_credentials(self._host, options)
        self._lock = threading.Lock()
        self._base: str | None = None
        self._auth: RegistryAuth | None = None
        # Where this client has seen each blob: a blob missing from one repository but
        # known in another of the same registry is mounted, not uploaded again.
        self._seen: dict[Digest, str] = {}

    @property
    def location(self) -> str:
        return f"{SCHEME}{self._host}/{self._namespace}".rstrip("/")

    version_tag = staticmethod(version_tag)
    tag_version = staticmethod(tag_version)

    def check_name(self, name: str) -> str:
        self.repository(name)
        return name

    def close(self) -> None:
        self._transport.close()

    def list_names(self) -> list[str]:
        """Every model name in the namespace, from the registry's catalog.

        Raises:
            RegistryError: the registry does not allow listing its repositories (common
                on hosted registries: name the model instead), or cannot be read.
        """
        prefix = f"{self._namespace}/" if self._namespace else ""
        found: list[str] = []
        what = f"list the repositories of {self._host}"
        url = f"{self._base_url()}/v2/_catalog?n=1000"
        for repositories in self._pages(url, CATALOG_SCOPE, what, "repositories"):
            for repo in repositories:
                if isinstance(repo, str) and repo.startswith(prefix):
                    name = repo[len(prefix) :]
                    if NAME_RE.fullmatch(name):
                        found.append(name)
        return found

    def list_tags(self, name: str) -> list[str]:
        """Every tag of ``name``'s repository as the registry lists it; empty when the
        repository does not exist.

        Raises:
            RegistryError: the registry cannot be read.
        """
        repo = self.repository(name)
        what = f"list the tags of {name} in {self.location}"
        url = f"{self._base_url()}/v2/{repo}/tags/list"
        tags: list[str] = []
        for listed in self._pages(url, f"repository:{repo}:pull", what, "tags"):
            tags += [t for t in listed if isinstance(t, str) and _TAG_RE.fullmatch(t)]
        return tags

    def find_tag(self, name: str, tag: str, *, limit: int) -> Tagged | None:
        """The OCI manifest ``tag`` names, read to ``limit`` + 1 bytes, and the digest the
        registry claims for it; None when there is no such repository or tag.

        Raises:
            RegistryError: the registry cannot be read.
        """
        repo = self.repository(name)
        url = f"{self._base_url()}/v2/{repo}/manifests/{tag}"
        what = f"resolve {name}:{tag} in {self.location}"
        response = self.request(
            "GET",
            url,
            what=what,
            # distribution answers 404 for an OCI manifest unless it is asked for.
            headers={"Accept": OCI_MANIFEST_MEDIA_TYPE},
            scope=f"repository:{repo}:pull",
        )
        if response.status_code == 404:
            response.close()
            return None
        if response.status_code != 200:
            raise self._transport.http_error(response, what, self._auth)
        claimed = response.headers.get("Docker-Content-Digest")
        data = self._transport.read(response, limit=limit, what=what, auth=self._auth)
        return Tagged(data=data, claimed=_claimed_digest(claimed, what))

    def blob_request(self, name: str, desc: Descriptor, what: str) -> BlobRequest:
        repo = self.repository(name)
        url, scope = self.blob_url(repo, desc.digest), f"repository:{repo}:pull"
        return BlobRequest(url, desc, what, self.authenticator(), scope)

    def repository(self, name: str) -> str:
        check_name(name)
        if not _COMPONENT_RE.fullmatch(name):
            raise UsageError(
                f"model name {name!r} is not a valid OCI repository name: end it with a "
                "letter or digit and do not repeat '.' or mix separators"
            )
        return f"{self._namespace}/{name}" if self._namespace else name

    def _base_url(self) -> str:
        """``http(s)://host[:port]``, decided on first use.

        HTTPS unless --plain-http; a loopback host is tried over HTTPS first and over
        plain HTTP if that fails and the HTTP endpoint answers like a registry (local
        test and cache registries rarely have certificates). Credentials never go over
        that automatic plain HTTP (any local user could be listening on the port): the
        registry's first challenge is refused with a hint to pass --plain-http.
        """
        with self._lock:
            if self._base is None:
                hostname = urlsplit(f"//{self._host}").hostname or self._host
                if self._options.plain_http:
                    self._base = f"http://{self._host}"
                elif not is_loopback(hostname):
                    self._base = f"https://{self._host}"
                else:
                    self._base = self._probe_loopback()
                self._auth = RegistryAuth(
                    transport=self._transport,
                    registry_url=self._base,
                    credentials=self._credentials,
                    plain_http=self._options.plain_http,
                )
            return self._base

    def _probe_loopback(self) -> str:
        secure = f"https://{self._host}"
        what = f"reach {self.location}"
        try:
            self._transport.request("GET", f"{secure}/v2/", what=what, retry=False).close()
        except RegistryError as tls_failure:
            plain = f"http://{self._host}"
            try:
                response = self._transport.request("GET", f"{plain}/v2/", what=what, retry=False)
            except RegistryError:
                raise tls_failure from None
            response.close()
            if response.status_code not in (200, 401):
                raise tls_failure from None
            return plain
        return secure

    def authenticator(self) -> RegistryAuth:
        self._base_url()
        assert self._auth is not None
        return self._auth

    def request(
        self, method: str, url: str, *, what: str, scope: str, **sent: Unpack[Sent]
    ) -> Response:
        """:meth:`Transport.request` answering challenges with this registry's credentials
        for ``scope``."""
        return self._transport.request(
            method, url, what=what, auth=self.authenticator(), scope=scope, **sent
        )

    def blob_url(self, repo: str, digest: Digest) -> str:
        return f"{self._base_url()}/v2/{repo}/blobs/{digest}"

    def saw(self, digest: Digest, repo: str) -> None:
        self._seen.setdefault(digest, repo)

    def _pages(self, url: str, scope: str, what: str, key: str) -> Iterator[list[Any]]:
        """The ``key`` lists of a listing's pages, following ``Link: <…>; rel="next"``.

        A 404 is an empty listing; a 401/403/404 on the catalog means it is not offered.

        Raises:
            RegistryError: a page is not a JSON object with a list under ``key``, or the
                pages together run past :data:`MAX_PAGES`, :data:`MAX_LISTING_BYTES` or
                :data:`MAX_LISTED` entries.
        """
        visited: set[str] = set()
        total = listed = 0
        while url not in visited:
            if len(visited) >= MAX_PAGES:
                raise _endless(what, f"{MAX_PAGES} pages")
            visited.add(url)
            response = self.request("GET", url, what=what, scope=scope)
            status = response.status_code
            if scope == CATALOG_SCOPE and status in (401, 403, 404):
                response.close()
                raise RegistryError(
                    f"{self._host} does not let this client list its repositories "
                    f"(_catalog answered {status}; hosted registries often refuse it, or it "
                    f"needs credentials): name the model, e.g. `packager search NAME "
                    f"--registry {self.location}`"
                )
            if status == 404:
                response.close()
                return
            if status != 200:
                raise self._transport.http_error(response, what, self._auth)
            following = response.links.get("next", {}).get("url")
            body = self._transport.read(response, limit=MAX_LIST_BYTES, what=what, auth=self._auth)
            total += len(body)
            if total > MAX_LISTING_BYTES:
                raise _endless(what, f"{MAX_LISTING_BYTES} bytes")
            page = loads(body, what=what, error=_no_listing, limits=_LIST_LIMITS)
            entries = (page.get(key) or []) if isinstance(page, dict) else None
            if not isinstance(entries, list):
                raise _no_listing(f"cannot {what}")
            listed += len(entries)
            if listed > MAX_LISTED:
                raise _endless(what, f"{MAX_LISTED} entries")
            yield entries
            if not following:
                return
            url = urljoin(url, following)

    def tagged_digest(self, repo: str, tag: str, scope: str) -> Digest | None:
        """The digest of the manifest ``tag`` names (hashed here), or None if untagged."""
        url = f"{self._base_url()}/v2/{repo}/manifests/{tag}"
        what = f"check {repo}:{tag} in {self._host}"
        response = self.request(
            "GET", url, what=what, scope=scope, headers={"Accept": OCI_MANIFEST_MEDIA_TYPE}
        )
        if response.status_code == 404:
            response.close()
            return None
        if response.status_code != 200:
            raise self._transport.http_error(response, what, self._auth)
        data = self._transport.read(
            response, limit=MAX_OCI_MANIFEST_BYTES, what=what, auth=self._auth
        )
        return Digest.of(data)

    def push_blob(self, repo: str, desc: Descriptor, source: Path | bytes, scope: str) -> None:
        title = desc.annotations.get(TITLE_ANNOTATION, "config")
        what = f"upload {title} ({desc.digest}) to {self._host}/{repo}"
        url = self.blob_url(repo, desc.digest)
        response = self.request("HEAD", url, what=what, scope=scope)
        response.close()
        if response.status_code == 200:
            self.saw(desc.digest, repo)
            return
        if response.status_code != 404:
            raise self._transport.http_error(response, what, self._auth)
        uploads = f"{self._base_url()}/v2/{repo}/blobs/uploads/"
        mount_from = self._seen.get(desc.digest)
        if mount_from is not None and mount_from != repo:
            response = self.request(
                "POST",
                uploads,
                what=what,
                scope=f"{scope} repository:{mount_from}:pull",
                params={"mount": str(desc.digest), "from": mount_from},
            )
            if response.status_code == 201:
                response.close()
                self.saw(desc.digest, repo)
                return
        else:
            response = self.request("POST", uploads, what=what, scope=scope)
        # Also the answer to a mount the registry could not do: it opens an upload instead.
        if response.status_code != 202 or "Location" not in response.headers:
            raise self._transport.http_error(response, what, self._auth)
        response.close()
        location = urljoin(uploads, response.headers["Location"])
        minimum = header_number(response.headers.get("OCI-Chunk-Min-Length")) or 0
        chunk = max(self._options.chunk_size, minimum)
        with progress_bar(
            f"uploading {title}", desc.size, enabled=self._options.progress
        ) as progress:
            meter = _Meter(progress)
            final: Body = b""
            if desc.size <= chunk:
                final = _body(source, 0, desc.size, meter)
            else:
                refused, location = self._patch_chunks(
                    location, source, desc, chunk=chunk, meter=meter, what=what, scope=scope
                )
                if refused:
                    final = _body(source, 0, desc.size, meter)
            response = self.request(
                "PUT",
                location,
                what=what,
                scope=scope,
                body=final,
                params={"digest": str(desc.digest)},
                headers={"Content-Type": "application/octet-stream"},
            )
        if response.status_code not in (201, 204):
            raise self._transport.http_error(response, what, self._auth)
        response.close()
        self.saw(desc.digest, repo)

    def _patch_chunks(
        self,
        location: str,
        source: Path | bytes,
        desc: Descriptor,
        *,
        chunk: int,
        meter: _Meter,
        what: str,
        scope: str,
    ) -> tuple[bool, str]:
        """Send the blob in PATCH chunks; (True, location) when the registry refuses
        PATCH on the first chunk, so that the caller uploads in one PUT instead."""
        offset = 0
        while offset < desc.size:
            length = min(chunk, desc.size - offset)
            response = self.request(
                "PATCH",
                location,
                what=what,
                scope=scope,
                body=_body(source, offset, length, meter),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + length - 1}",
                },
            )
            if offset == 0 and response.status_code in PATCH_REFUSED:
                response.close()
                return True, location
            if response.status_code not in UPLOAD_ACCEPTED:
                raise self._transport.http_error(response, what, self._auth)
            response.close()
            location = urljoin(location, response.headers.get("Location", location))
            offset += length
        return False, location

    def put_manifest(self, repo: str, tag: str, data: bytes, digest: Digest, scope: str) -> None:
        what = f"tag {repo}:{tag} in {self._host}"
        response = self.request(
            "PUT",
            f"{self._base_url()}/v2/{repo}/manifests/{tag}",
            what=what,
            scope=scope,
            body=data,
            headers={"Content-Type": OCI_MANIFEST_MEDIA_TYPE},
        )
        if response.status_code not in (200, 201, 204):
            raise self._transport.http_error(response, what, self._auth)
        response.close()
        stored = response.headers.get("Docker-Content-Digest")
        if stored is not None and stored != str(digest):
            raise RegistryError(
                f"cannot {what}: the registry stored the manifest as {stored}, not {digest}; "
                "it rewrites manifests and cannot hold signed models"
            )


class OciRegistry(DocumentWriter, VerifiedRegistry):
    """A remote OCI distribution registry, read and written; see the module doc."""

    def __init__(self, ref: str, *, options: RegistryOptions) -> None:
        """Parse ``oci://host[:port]/namespace``; nothing is sent before the first call.

        Raises:
            UsageError: a malformed reference, or a Docker config that cannot be read.
        """
        self._oci = OciStore(ref, options=options)
        super().__init__(self._oci)

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Every write is done when it returns: nothing to group."""
        return contextlib.nullcontext()

    def resolve(self, name: str, version: str) -> Artifact:
        """What ``name``@``version`` contains (the manifest's digest is the client's own
        hash of its bytes); its blobs are remembered for cross-repository mounts."""
        artifact = super().resolve(name, version)
        repo = self._oci.repository(name)
        for desc in artifact.files.values():
            self._oci.saw(desc.digest, repo)
        return artifact

    def publish(self, bundle: Path, manifest: Manifest) -> Artifact:
        """Upload the bundle's blobs (skipping those present), then its OCI manifest,
        tagged with the version; see :class:`~packager.registry.base.RegistryWriter`.

        Raises:
            UsageError: the bundle does not match its manifest or cannot be read.
            TamperedError: a bundle file differs from the manifest.
            RegistryError: the version exists with different content, the registry
                refused an upload, or the network failed.
        """
        plan = plan_artifact(bundle, manifest)
        oci = self._oci
        repo = oci.repository(plan.name)
        tag = version_tag(plan.version)
        scope = f"repository:{repo}:pull,push"
        # Tags have no create-if-absent: two publishers racing on one version with
        # different content both pass this check and the last tag wins. The signature
        # still tells installers whose content they got.
        existing = oci.tagged_digest(repo, tag, scope)
        if existing == plan.manifest_digest:
            return plan.artifact()
        if existing is not None:
            raise RegistryError(
                f"{plan.name}@{plan.version} already exists with different content in "
                f"{self.location}; publish a new version"
            )
        for desc, source in plan.layers:
            oci.push_blob(repo, desc, source, scope)
        oci.push_blob(repo, plan.config, plan.config_bytes, scope)
        oci.put_manifest(repo, tag, plan.manifest_bytes, plan.manifest_digest, scope)
        return plan.artifact()

    def store_document(self, document: Document) -> None:
        """Upload the empty config and the document's layer (skipping blobs present), then
        PUT its OCI manifest by its tag, which moves the tag; see
        :class:`~packager.registry.document.DocumentWriter`.

        Raises:
            UsageError: the name is not a valid OCI repository name.
            RegistryError: the registry refused an upload or rewrote the manifest, or the
                network failed.
        """
        oci = self._oci
        repo = oci.repository(document.name)
        scope = f"repository:{repo}:pull,push"
        for desc, content in document.blobs:
            oci.push_blob(repo, desc, content, scope)
        digest = document.manifest_descriptor.digest
        oci.put_manifest(repo, document.tag, document.manifest, digest, scope)


def _no_listing(reason: str) -> RegistryError:
    return RegistryError(f"{reason}: the registry sent no JSON object with a list")


def _endless(what: str, cap: str) -> RegistryError:
    return RegistryError(
        f"cannot {what}: the registry's listing runs past {cap}; it is not a listing "
        "this client follows"
    )


def _claimed_digest(claimed: str | None, what: str) -> Digest | None:
    """The ``Docker-Content-Digest`` a registry sent, parsed; a malformed one is a lie."""
    if claimed is None:
        return None
    try:
        return Digest.parse(claimed)
    except TamperedError as e:
        raise TamperedError(f"cannot {what}: the registry claims the digest {claimed!r}") from e


class _Meter:
    """Turns read positions into progress steps; re-reads after a retry do not count."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._high = 0

    def reached(self, position: int) -> None:
        if self._progress is not None and position > self._high:
            self._progress(position - self._high)
            self._high = position


class _FileSlice:
    """Bytes ``[offset, offset + length)`` of a file, as a sized request body."""

    def __init__(self, path: Path, offset: int, length: int, meter: _Meter) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by the transport after sending
        self._file.seek(offset)
        self._position = offset
        self._length = length
        self._left = length
        self._meter = meter

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1, /) -> bytes:
        data = self._file.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        self._position += len(data)
        self._meter.reached(self._position)
        return data

    def close(self) -> None:
        self._file.close()


def _body(source: Path | bytes, offset: int, length: int, meter: _Meter) -> Body:
    if isinstance(source, bytes):
        meter.reached(offset + length)
        return source[offset : offset + length]
    return lambda: _FileSlice(source, offset, length, meter)
