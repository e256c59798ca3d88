"""Documents attached to a version in every kind of registry: the embedded directory, the
in-memory registry, a real docker-registry on 127.0.0.1, archives and static mirrors; each
an OCI artifact whose ``subject`` is the version's OCI manifest (read back by skopeo, an
outside OCI implementation), reachable by tag; carried by export and mirror."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from packager.cli import main
from packager.core.benchrecord import KIND as BENCHMARK_KIND
from packager.core.digests import Digest
from packager.core.policy import Unverified
from packager.distribution.mirror import export, mirror
from packager.errors import RegistryError, TamperedError, UsageError
from packager.registry import ArchiveRegistry, LayoutRegistry
from packager.registry.artifact import OCI_MANIFEST_MEDIA_TYPE
from packager.registry.attachments import (
    MAX_ATTACHMENTS_PER_KIND,
    MAX_ATTACHMENTS_PER_VERSION,
    Attachment,
    attachment_tag,
    attachments_in,
    get_attachment,
    list_attachments,
    put_attachment,
    read_attachments,
)
from packager.registry.base import Registry, RegistryReader
from packager.registry.http import StaticMirrorRegistry
from packager.registry.layout import render_models_index
from packager.registry.memory import MemoryRegistry
from packager.registry.options import RegistryOptions

from ..conftest import KeyPair
from .servers import serve
from .test_archive import skopeo
from .test_http_mirror import FAST, Site, _StaticHandler
from .test_layout import make_bundle
from .test_oci import registry_at

APPROVAL_1 = b'{"approval": 1}'
APPROVAL_2 = b'{"approval": 2, "padding": "' + b"x" * 64 + b'"}'
OTHER = b'{"benchmark": 1}'


@pytest.fixture
def layout(tmp_path: Path) -> LayoutRegistry:
    registry = LayoutRegistry(tmp_path / "registry")
    for version in ("1.0.0", "1.1.0"):
        registry.publish(*make_bundle(tmp_path / "bundles", version=version))
    return registry


@pytest.fixture(params=["layout", "memory", "oci", "archive"])
def registry(
    request: pytest.FixtureRequest, tmp_path: Path, layout: LayoutRegistry
) -> Iterator[Registry]:
    """A writable registry of each kind holding iris 1.0.0 and 1.1.0."""
    if request.param == "layout":
        yield layout
        return
    if request.param == "archive":
        out = tmp_path / "models.tar"
        export(["iris@1.0.0", "iris@1.1.0"], registry=layout, out=out)
        yield ArchiveRegistry(out)
        return
    if request.param == "memory":
        with MemoryRegistry() as memory:
            for version in ("1.0.0", "1.1.0"):
                memory.publish(*make_bundle(tmp_path / "memory", version=version))
            yield memory
        return
    host: str = request.getfixturevalue("registry_host")
    remote = registry_at(host, request.getfixturevalue("namespace"))
    for version in ("1.0.0", "1.1.0"):
        remote.publish(*make_bundle(tmp_path / "remote", version=version))
    yield remote


def attach_three(registry: Registry) -> list[Attachment]:
    artifact = registry.resolve("iris", "1.0.0")
    return [
        put_attachment(registry, artifact, "approval", APPROVAL_1),
        put_attachment(registry, artifact, "approval", APPROVAL_2),
        put_attachment(registry, artifact, "benchmark", OTHER),
    ]


def test_documents_are_attached_beside_one_version_and_never_replace_each_other(
    registry: Registry,
) -> None:
    put = attach_three(registry)
    v1, v11 = registry.resolve("iris", "1.0.0"), registry.resolve("iris", "1.1.0")
    assert put[0].tag == attachment_tag(v1.manifest_digest, "approval", APPROVAL_1)
    assert put[0].tag.startswith(f"sha256-{v1.manifest_digest.hex}.approval.")
    assert list_attachments(registry, v1) == sorted(put, key=lambda a: (a.kind, a.tag))
    assert sorted(read_attachments(registry, v1, "approval", max_size=4096)) == sorted(
        [APPROVAL_1, APPROVAL_2]
    )
    assert read_attachments(registry, v1, "benchmark", max_size=4096) == [OTHER]
    # The other version has none, and versions never list attachment tags.
    assert list_attachments(registry, v11) == []
    assert registry.versions("iris") == ["1.0.0", "1.1.0"]
    # Attaching the same bytes again is the same document.
    assert put_attachment(registry, v1, "approval", APPROVAL_1) == put[0]
    assert len(list_attachments(registry, v1, "approval")) == 2


def test_an_attachment_of_another_kind_or_over_its_cap_is_refused(registry: Registry) -> None:
    put = attach_three(registry)
    with pytest.raises(TamperedError, match="artifactType"):
        get_attachment(registry, "iris", Attachment("benchmark", put[0].tag), max_size=4096)
    with pytest.raises(TamperedError):
        get_attachment(registry, "iris", put[1], max_size=10)
    with pytest.raises(UsageError, match="kind"):
        put_attachment(registry, registry.resolve("iris", "1.0.0"), "Approval!", APPROVAL_1)


def test_docker_registry_stores_the_subject_as_skopeo_reads_it(
    registry_host: str, namespace: str, tmp_path: Path
) -> None:
    remote = registry_at(registry_host, namespace)
    remote.publish(*make_bundle(tmp_path, version="1.0.0"))
    artifact = remote.resolve("iris", "1.0.0")
    found = put_attachment(remote, artifact, "approval", APPROVAL_1)
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        f"docker://{registry_host}/{namespace}/iris:{found.tag}",
    )
    doc = json.loads(raw)
    assert doc["artifactType"] == "application/vnd.packager.approval.v1+json"
    assert doc["subject"] == {
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "digest": str(artifact.manifest_digest),
        "size": len(artifact.oci_manifest),
    }
    assert doc["layers"][0]["digest"] == str(Digest.of(APPROVAL_1))


def test_layout_and_archive_attachments_are_oci_artifacts_skopeo_reads(
    layout: LayoutRegistry, tmp_path: Path
) -> None:
    found = attach_three(layout)[0]
    artifact = layout.resolve("iris", "1.0.0")
    out = tmp_path / "models.tar"
    export(["iris@1.0.0"], registry=layout, out=out)
    for ref in (f"oci:{layout.root / 'iris'}:{found.tag}", f"oci-archive:{out}:iris:{found.tag}"):
        doc = json.loads(skopeo("inspect", "--raw", ref))
        assert doc["subject"]["digest"] == str(artifact.manifest_digest), ref


def test_export_and_mirror_carry_every_attachment(
    layout: LayoutRegistry, tmp_path: Path, registry_host: str, namespace: str
) -> None:
    attach_three(layout)
    wanted = sorted([APPROVAL_1, APPROVAL_2])
    out = tmp_path / "carried.tar"
    export(["iris@1.0.0"], registry=layout, out=out)
    archive = ArchiveRegistry(out)
    assert (
        sorted(
            read_attachments(archive, archive.resolve("iris", "1.0.0"), "approval", max_size=4096)
        )
        == wanted
    )

    unverified = Unverified("mirror --no-verify")
    for destination in (
        LayoutRegistry(tmp_path / "copy"),
        registry_at(registry_host, namespace),
        ArchiveRegistry(tmp_path / "mirrored.tar"),
    ):
        mirror(archive, destination, ["iris@1.0.0"], mode=unverified)
        copy = destination.resolve("iris", "1.0.0")
        assert sorted(read_attachments(destination, copy, "approval", max_size=4096)) == wanted
        assert read_attachments(destination, copy, "benchmark", max_size=4096) == [OTHER]
        # Mirroring again copies nothing twice.
        mirror(archive, destination, ["iris@1.0.0"], mode=unverified)
        assert len(list_attachments(destination, destination.resolve("iris", "1.0.0"))) == 3


def test_a_static_mirror_serves_attachments(layout: LayoutRegistry, tmp_path: Path) -> None:
    attach_three(layout)
    site = Site(tmp_path)
    (layout.root / "models.json").write_bytes(render_models_index(layout.names()))
    with serve(_StaticHandler, site) as port:
        site.port = port
        static: RegistryReader = StaticMirrorRegistry(site.url, options=RegistryOptions(retry=FAST))
        artifact = static.resolve("iris", "1.0.0")
        assert len(list_attachments(static, artifact)) == 3
        assert sorted(read_attachments(static, artifact, "approval", max_size=4096)) == sorted(
            [APPROVAL_1, APPROVAL_2]
        )


def test_a_registry_listing_too_many_documents_of_a_kind_is_refused(
    layout: LayoutRegistry,
) -> None:
    artifact = layout.resolve("iris", "1.0.0")
    for i in range(MAX_ATTACHMENTS_PER_KIND + 1):
        put_attachment(layout, artifact, "approval", b'{"n": %d}' % i)
    with pytest.raises(TamperedError, match="more than the 64"):
        read_attachments(layout, artifact, "approval", max_size=4096)
    with pytest.raises(TamperedError, match="lists 65 approval documents"):
        list_attachments(layout, artifact)


def test_mirror_and_export_refuse_too_many_documents_of_a_kind(
    layout: LayoutRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cap install reads attachments with holds for every copy: each command stops
    with one line and exit 3, and writes nothing."""
    artifact = layout.resolve("iris", "1.0.0")
    for i in range(MAX_ATTACHMENTS_PER_KIND + 1):
        put_attachment(layout, artifact, BENCHMARK_KIND, b'{"n": %d}' % i)
    archive, copy = tmp_path / "out.tar", tmp_path / "copy"
    commands = (
        ("export", "iris@1.0.0", "--registry", layout.root, "-o", archive),
        ("mirror", layout.root, copy, "--no-verify"),
    )
    for command in commands:
        code = main(["-q", *map(str, command)])
        err = capsys.readouterr().err
        # -q: nothing else on stderr, but --no-verify's warning.
        refusal = [line for line in err.splitlines() if "WARNING: --no-verify" not in line]
        assert code == 3, err
        assert refusal == [f"packager: error: {TOO_MANY.format(layout.location)}"]
    assert not archive.exists()
    assert not (copy.exists() and LayoutRegistry(copy).names())


TOO_MANY = "{} lists 65 benchmark documents for iris@1.0.0, more than the 64 packager reads"


def test_history_and_search_report_a_version_with_too_many_documents_and_list_the_others(
    layout: LayoutRegistry, capsys: pytest.CaptureFixture[str], keypair: KeyPair
) -> None:
    """Listing commands read none of that version's documents, say why in one line (in
    the JSON too) and list the other versions, as for any document that does not count:
    exit 0."""
    artifact = layout.resolve("iris", "1.0.0")
    for i in range(MAX_ATTACHMENTS_PER_KIND + 1):
        put_attachment(layout, artifact, BENCHMARK_KIND, b'{"n": %d}' % i)
    put_attachment(layout, layout.resolve("iris", "1.1.0"), "approval", APPROVAL_1)
    too_many = TOO_MANY.format(layout.location)
    registry = ("--registry", str(layout.root))
    history = ("benchmark", "history", "iris", *registry, "--key", str(keypair.pub_path))
    search = ("search", "iris", "--attachments", *registry)

    assert main([*history, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["refused"] == [{"version": "1.0.0", "problem": too_many}]
    assert main(["-q", *history]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"not counted (1.0.0): {too_many}"

    assert main([*search, "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)["versions"]
    assert [(d["kind"], d["problem"]) for d in versions["1.0.0"]] == [("*", too_many)]
    assert [d["kind"] for d in versions["1.1.0"]] == ["approval"]
    assert main(["-q", *search]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if too_many in line] == [f"  *          unreadable: {too_many}"]
    assert "iris@1.1.0" in out and "  approval" in "\n".join(out)


def test_documents_of_kinds_packager_does_not_know_are_neither_read_nor_carried(
    layout: LayoutRegistry, tmp_path: Path
) -> None:
    """A kind is any short word: 65 kinds of one document each would pass a per-kind cap,
    so listing every kind lists the known ones only, and export and mirror skip the rest."""
    attach_three(layout)
    artifact = layout.resolve("iris", "1.0.0")
    for i in range(MAX_ATTACHMENTS_PER_KIND + 1):
        put_attachment(layout, artifact, f"junk{i}", b'{"n": %d}' % i)
    assert {a.kind for a in list_attachments(layout, artifact)} == {"approval", "benchmark"}
    assert len(list_attachments(layout, artifact)) == 3
    # Asked for by name, a kind is still read.
    assert len(list_attachments(layout, artifact, "junk7")) == 1

    out = tmp_path / "carried.tar"
    export(["iris@1.0.0"], registry=layout, out=out)
    copy = LayoutRegistry(tmp_path / "copy")
    mirror(layout, copy, ["iris@1.0.0"], mode=Unverified("mirror --no-verify"))
    for destination in (ArchiveRegistry(out), copy):
        tags = [t for t in destination.tags("iris") if t.startswith("sha256-")]
        assert sorted(t.split(".")[1] for t in tags) == ["approval", "approval", "benchmark"]


def test_a_version_named_by_too_many_documents_of_any_kinds_is_refused(
    layout: LayoutRegistry, tmp_path: Path
) -> None:
    artifact = layout.resolve("iris", "1.0.0")
    tags = layout.tags("iris")
    for i in range(MAX_ATTACHMENTS_PER_VERSION + 1):
        tags.append(attachment_tag(artifact.manifest_digest, f"k{i}", b"%d" % i))
    with pytest.raises(TamperedError, match=f"lists {MAX_ATTACHMENTS_PER_VERSION + 1} documents"):
        attachments_in(tags, artifact, location=layout.location)
    with pytest.raises(TamperedError, match="more than the 256"):
        attachments_in(tags, artifact, "approval", location=layout.location)
    assert attachments_in(tags[:-1], artifact, location=layout.location) == []


def test_mirror_refuses_documents_the_destination_could_not_hold_before_writing_anything(
    layout: LayoutRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each side under the cap, both together over it: installs from the destination would
    refuse the version, so mirror refuses it (exit 4) before writing any version or
    document, even those it met first."""
    copy = LayoutRegistry(tmp_path / "copy")
    mirror(layout, copy, mode=Unverified("mirror --no-verify"))
    put_attachment(copy, copy.resolve("iris", "1.1.0"), "approval", APPROVAL_1)
    source = layout.resolve("iris", "1.1.0")
    for i in range(MAX_ATTACHMENTS_PER_KIND):
        put_attachment(layout, source, "approval", b'{"n": %d}' % i)
    layout.publish(*make_bundle(tmp_path / "new", version="1.0.5"))
    put_attachment(layout, layout.resolve("iris", "1.0.0"), "benchmark", OTHER)
    before = sorted(copy.tags("iris"))

    code = main(["-q", "mirror", str(layout.root), str(copy.root), "--no-verify"])
    refusal = [e for e in capsys.readouterr().err.splitlines() if "WARNING" not in e]
    assert code == 4
    assert refusal == [
        f"packager: error: {copy.location} holds 1 approval documents for iris@1.1.0 and "
        f"{layout.location} 64 others: together more than the 64 packager reads, so "
        "installs would refuse the version; nothing of it was copied"
    ]
    assert sorted(copy.tags("iris")) == before
    assert copy.versions("iris") == ["1.0.0", "1.1.0"]


def test_mirror_counts_the_destinations_documents_of_every_kind_against_the_version_cap(
    layout: LayoutRegistry,
) -> None:
    source = layout.resolve("iris", "1.1.0")
    for i in range(MAX_ATTACHMENTS_PER_KIND):
        put_attachment(layout, source, "approval", b'{"n": %d}' % i)
    with MemoryRegistry() as copy:
        mirror(layout, copy, mode=Unverified("mirror --no-verify"))
        held = copy.resolve("iris", "1.1.0")
        assert len(list_attachments(copy, held)) == MAX_ATTACHMENTS_PER_KIND
        for i in range(MAX_ATTACHMENTS_PER_VERSION - MAX_ATTACHMENTS_PER_KIND):
            put_attachment(copy, held, f"k{i}", b"%d" % i)
        put_attachment(layout, source, "benchmark", OTHER)  # one more: 257 there
        before = sorted(copy.tags("iris"))
        with pytest.raises(RegistryError, match="holds 256 documents for iris@1.1.0 and"):
            mirror(layout, copy, mode=Unverified("mirror --no-verify"))
        assert sorted(copy.tags("iris")) == before
