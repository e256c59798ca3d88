"""Hostile tar headers, written byte by byte: refused quickly, before anything is read or written.

Each archive here is built from raw 512-byte headers, so it holds exactly the trick under
test (Python's tarfile could not write most of them). The scanner must refuse it with
TamperedError (exit 3) within a second, and an install from it must leave nothing behind.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest

from packager.cli import main
from packager.errors import TamperedError
from packager.registry import ArchiveRegistry
from packager.registry.tarscan import MAX_EXTENSION, TarMember, scan_tar

from ..conftest import KeyPair

POSIX = b"ustar\x0000"
GNU = b"ustar  \x00"
END = bytes(1024)


def header(
    name: bytes,
    size: int,
    kind: bytes = b"0",
    *,
    magic: bytes = POSIX,
    prefix: bytes = b"",
    size_field: bytes | None = None,
    checksum_delta: int = 0,
) -> bytes:
    """A ustar header block with a correct checksum (plus ``checksum_delta``)."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\x00"
    block[108:116] = block[116:124] = b"0000000\x00"
    block[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    block[136:148] = b"00000000000\x00"
    block[148:156] = b" " * 8
    block[156:157] = kind
    block[257:265] = magic
    block[345 : 345 + len(prefix)] = prefix
    block[148:156] = b"%06o\x00 " % (sum(block) + checksum_delta)
    return bytes(block)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def member(name: bytes, data: bytes = b"", kind: bytes = b"0", **kw: bytes) -> bytes:
    return header(name, len(data), kind, **kw) + padded(data)  # type: ignore[arg-type]


def record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def extension(records: bytes, kind: bytes = b"x") -> bytes:
    return member(b"PaxHeaders/x", records, kind)


LAYOUT = member(b"oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
BLOB = b"blobs/sha256/" + b"ab" * 32

HOSTILE: dict[str, tuple[bytes, str]] = {
    "global pax header": (extension(record(b"path", b"x"), b"g") + LAYOUT, "global PAX header"),
    "sparse member": (member(BLOB, b"x", b"S"), "sparse file"),
    "gnu sparse pax keys": (
        extension(record(b"GNU.sparse.major", b"1") + record(b"GNU.sparse.minor", b"0"))
        + member(BLOB, b"x"),
        "sparse file",
    ),
    "pax header chained to a pax header": (
        extension(record(b"path", b"a")) + extension(record(b"path", b"b")) + member(BLOB),
        "follows another",
    ),
    "long name chained to a long name": (
        extension(b"a\x00", b"L") + extension(b"b\x00", b"L") + member(BLOB),
        "follows another",
    ),
    "pax header chained to a long name": (
        extension(record(b"path", b"a")) + extension(b"b\x00", b"L") + member(BLOB),
        "follows another",
    ),
    "long link name": (extension(b"target\x00", b"K") + member(BLOB), "long link name"),
    "extension header past the cap": (
        extension(record(b"comment", b"x" * MAX_EXTENSION)) + member(BLOB),
        "extension header of",
    ),
    "extension header then the end": (extension(record(b"path", b"a")), "ends after"),
    "newline in a name": (member(b"index.json\n", b"{}"), "control character"),
    "escape in a pax path": (
        extension(record(b"path", b"blobs/\x1b[2J")) + member(BLOB),
        "control character",
    ),
    "NUL in a pax path": (
        extension(record(b"path", b"index.json\x00evil")) + member(BLOB),
        "control character",
    ),
    "NUL inside the name field": (member(b"index.json\x00evil", b"{}"), "NUL byte"),
    "NUL inside a long name": (extension(b"a\x00b\x00", b"L") + member(BLOB), "NUL byte"),
    "name not UTF-8": (member(b"blobs/\xff"), "not UTF-8"),
    "pax names not UTF-8": (
        extension(record(b"hdrcharset", b"BINARY")) + member(BLOB),
        "not UTF-8",
    ),
    "pax key set twice": (
        extension(record(b"path", b"a") + record(b"path", b"b")) + member(BLOB),
        "twice",
    ),
    "pax record of a wrong length": (
        extension(b"99 path=a\n") + member(BLOB),
        "PAX header is malformed",
    ),
    "pax record of length zero": (extension(b"0 path=a\n") + member(BLOB), "malformed"),
    "empty pax path": (extension(record(b"path", b"")) + member(BLOB), "empty path"),
    "pax size not a number": (
        extension(record(b"size", b"-1")) + member(BLOB),
        "size b'-1' is malformed",
    ),
    "pax size past the file": (
        extension(record(b"size", b"1000000")) + member(BLOB, b"x"),
        "truncated",
    ),
    "checksum off by one": (LAYOUT + header(BLOB, 0, checksum_delta=1), "damaged header"),
    "first checksum wrong": (header(BLOB, 0, checksum_delta=1), "not an uncompressed tar"),
    "no ustar magic": (header(BLOB, 0, magic=b"\x00" * 8), "not an uncompressed tar"),
    "size past the file": (header(BLOB, 1 << 30) + b"x" * 512, "truncated"),
    "negative base-256 size": (header(BLOB, 0, size_field=b"\xff" * 12), "size field"),
    "size field not octal": (header(BLOB, 0, size_field=b"0000000009\x00\x00"), "size field"),
    "directory holding data": (member(b"blobs/", b"x", b"5"), "holds data"),
    "hard link": (member(BLOB, b"", b"1"), "hard link"),
    "unknown kind": (member(BLOB, b"", b"Z"), "member of type b'Z'"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_headers_are_refused_quickly(case: str, tmp_path: Path) -> None:
    data, reason = HOSTILE[case]
    path = tmp_path / "hostile.tar"
    path.write_bytes(data + END)
    start = time.monotonic()
    with pytest.raises(TamperedError, match=reason):
        ArchiveRegistry(path).names()
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("case", ["global pax header", "gnu sparse pax keys", "NUL in a pax path"])
def test_install_from_a_hostile_archive_exits_3_and_writes_nothing(
    case: str, capsys: pytest.CaptureFixture[str], keypair: KeyPair, home: Path, tmp_path: Path
) -> None:
    carry = tmp_path / "carry"
    carry.mkdir()
    (carry / "models.tar").write_bytes(HOSTILE[case][0] + END)
    code = main(
        [
            "install",
            "iris@1.0.0",
            "--registry",
            str(carry / "models.tar"),
            "--key",
            str(keypair.pub_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.splitlines()[-1].startswith("packager: error:")
    assert sorted(p.name for p in carry.iterdir()) == ["models.tar"]
    assert not any((home / "models").glob("*/*")), "nothing may be installed"


def scan(data: bytes, max_headers: int = 100) -> list[TarMember]:
    return list(
        scan_tar(io.BytesIO(data), file_size=len(data), where="t.tar", max_headers=max_headers)
    )


def test_headers_are_counted() -> None:
    data = b"".join(member(b"f%d" % i) for i in range(4)) + END
    assert len(scan(data, max_headers=4)) == 4
    with pytest.raises(TamperedError, match="more than 3 headers"):
        scan(data, max_headers=3)
    pax = b"".join(extension(record(b"path", b"f%d" % i)) + member(b"x") for i in range(2))
    with pytest.raises(TamperedError, match="more than 3 headers"):
        scan(pax + END, max_headers=3)


def test_a_large_pax_header_within_the_cap_is_read_in_linear_time() -> None:
    # Many tiny records: the shape that makes tarfile's PAX parse quadratic.
    records = b"".join(record(b"k%d" % i, b"") for i in range(5000))
    assert len(records) < MAX_EXTENSION - 100
    data = extension(records + record(b"path", b"long")) + member(b"x", b"data") + END
    start = time.monotonic()
    [found] = scan(data)
    assert time.monotonic() - start < 1.0
    assert found.name == "long" and found.size == 4


def test_what_the_format_allows_is_read_as_tar_reads_it() -> None:
    """PAX path and size, a GNU long name, the ustar prefix, GNU magic, base-256 sizes."""
    data = (
        extension(record(b"path", b"p" * 150) + record(b"size", b"3") + record(b"mtime", b"1.5"))
        + header(b"short", 0)
        + padded(b"abc")
        + extension(b"l" * 200 + b"\x00", b"L")
        + member(b"ignored", b"de", magic=GNU)
        + member(b"name", b"f", prefix=b"pre/fix")
        + member(b"gnu", b"gh", magic=GNU)
        + header(b"big", 0, size_field=b"\x80" + (1).to_bytes(11, "big"))
        + padded(b"i")
        + member(b"dir/", b"", b"5")
        + member(b"./", b"", b"5")
        + END
    )
    found = scan(data)
    assert [(m.name, m.is_dir, data[m.offset : m.offset + m.size]) for m in found] == [
        ("p" * 150, False, b"abc"),
        ("l" * 200, False, b"de"),
        ("pre/fix/name", False, b"f"),
        ("gnu", False, b"gh"),
        ("big", False, b"i"),
        ("dir", True, b""),
        (".", True, b""),
    ]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = [info.name for info in tar.getmembers()]
    assert names == [m.name for m in found]


def test_archives_python_tarfile_writes_read_the_same(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in [("a" * 120, b"x" * 700), ("é/ü", b"y"), ("blobs/sha256/z", b"")]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    data = out.getvalue()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        expected = [(i.name, i.offset_data, i.size) for i in tar.getmembers()]
    assert [(m.name, m.offset, m.size) for m in scan(data)] == expected
