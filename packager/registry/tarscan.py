"""Reading the member table of an untrusted tar file, without :mod:`tarfile`.

Python's ``tarfile`` reads far more of the format than an archive of OCI blobs needs, and
a small hostile archive can make it crash (GNU sparse headers, chained long-name headers),
take hours (its PAX-header parse is quadratic) or use gigabytes (a global PAX header is
copied into every member). It also reads a name holding a NUL byte whole, where GNU tar
cuts it at the NUL: two tools, two names. So the 512-byte headers are read here, and only
the plain ustar/pax subset that packager and skopeo write is accepted:

- regular files and directories, in ustar (POSIX or GNU magic) headers whose checksum
  is right;
- before a member, at most one extension header: a PAX ``x`` header (``path`` and
  ``size`` are read, other keys ignored, sparse keys refused) or a GNU ``L`` long name,
  each at most :data:`MAX_EXTENSION` bytes;
- names of printable characters (UTF-8, no control characters, no NUL);
- every member's data inside the file, and a block of zeros at the end.

Everything else is refused with :class:`~packager.errors.TamperedError`: global headers,
sparse files, links, devices, FIFOs, chained extension headers, duplicate PAX keys, more
headers than the caller allows. Each header costs one read of 512 bytes (and of its
extension, at most 64 KiB), so the time and memory of a scan are linear and bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from packager.errors import TamperedError

BLOCK = 512
# A PAX header or long name of packager's or skopeo's archives is a few hundred bytes.
MAX_EXTENSION = 64 << 10
_ZEROS = bytes(BLOCK)
_REGULAR = (b"0", b"\0")
_DIRECTORY = b"5"
_PAX = b"x"
_LONG_NAME = b"L"
_KINDS = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"6": "FIFO",
    b"7": "contiguous file",
    b"g": "global PAX header",
    b"K": "long link name",
    b"S": "sparse file",
    b"V": "volume label",
    b"M": "multi-volume continuation",
}
_POSIX_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_PAX_UTF8 = b"ISO-IR 10646 2000 UTF-8"
# A decimal size of more digits is past any file (and past 64 bits).
_MAX_DIGITS = 19


@dataclass(frozen=True)
class TarMember:
    """A regular file or directory: its name as written, and where its data is."""

    name: str
    is_dir: bool
    offset: int
    size: int


@dataclass(frozen=True)
class _Extension:
    """What an extension header says about the member that follows it."""

    name: str | None = None
    size: int | None = None


def scan_tar(f: IO[bytes], *, file_size: int, where: str, max_headers: int) -> Iterator[TarMember]:
    """Yield the members of the tar file ``f`` (``file_size`` bytes long), in order.

    Raises:
        TamperedError: anything but the plain ustar/pax subset described above, a damaged
            or truncated header, member data past the end of the file, more than
            ``max_headers`` headers.
        OSError: ``f`` cannot be read.
    """
    offset = 0
    pending: _Extension | None = None
    for count in range(max_headers + 1):
        block = _read(f, offset, BLOCK, where)
        if block == _ZEROS:
            if pending is not None:
                raise TamperedError(f"{where} ends after an extension header; copy it again")
            return
        if count == max_headers:
            break
        _check_header(block, where, first=offset == 0)
        kind = block[156:157]
        size = _number(block[124:136], "size", where)
        data = offset + BLOCK
        if kind in (_PAX, _LONG_NAME):
            if pending is not None:
                raise TamperedError(f"{where}: an extension header follows another; refused")
            if size > MAX_EXTENSION:
                raise TamperedError(f"{where}: an extension header of {size} bytes; refused")
            raw = _read(f, data, size, where)
            pending = _pax(raw, where) if kind == _PAX else _Extension(name=_long_name(raw, where))
        else:
            extension = pending or _Extension()
            pending = None
            name = extension.name if extension.name is not None else _header_name(block, where)
            size = extension.size if extension.size is not None else size
            yield _member(name, kind, data, size, where, file_size)
        offset = data + -(-size // BLOCK) * BLOCK
    raise TamperedError(f"{where} has more than {max_headers} headers; refused")


def _member(name: str, kind: bytes, data: int, size: int, where: str, file_size: int) -> TarMember:
    if kind not in (*_REGULAR, _DIRECTORY):
        what = _KINDS.get(kind, f"member of type {kind!r}")
        raise TamperedError(
            f"{where}: member {name!r} is a {what}; archives hold regular files only"
        )
    if kind == _DIRECTORY and size:
        raise TamperedError(f"{where}: directory {name!r} holds data; refused")
    if kind == _DIRECTORY:
        name = name.rstrip("/") or name  # "blobs/" as most tools write it; "/" stays "/"
    if data + size > file_size:
        raise TamperedError(f"{where} is truncated; copy it again")
    return TarMember(name, kind == _DIRECTORY, data, size)


def _read(f: IO[bytes], offset: int, size: int, where: str) -> bytes:
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise TamperedError(f"{where} is truncated; copy it again")
    return data


def _check_header(block: bytes, where: str, *, first: bool) -> None:
    """The checksum and the ustar magic; a first header without them is not a tar."""
    magic = block[257:265]
    stored = _octal(block[148:156])
    unsigned = sum(block[:148]) + 8 * ord(" ") + sum(block[156:])
    signed = unsigned - 256 * sum(1 for b in (*block[:148], *block[156:]) if b > 127)
    if magic in (_POSIX_MAGIC, _GNU_MAGIC) and stored in (unsigned, signed):
        return
    if first:
        raise TamperedError(f"{where} is damaged or not an uncompressed tar; copy it again")
    raise TamperedError(f"{where} has a damaged header; copy it again")


def _octal(field: bytes) -> int | None:
    digits = field.rstrip(b"\0 ").lstrip(b" ")
    if not digits.strip(b"01234567"):
        return int(digits, 8) if digits else 0
    return None


def _number(field: bytes, what: str, where: str) -> int:
    """An octal field, or GNU base-256 (high bit set) for sizes of 8 GiB and more."""
    if field[0] == 0x80:
        return int.from_bytes(field[1:], "big")
    value = _octal(field)
    if value is None:
        raise TamperedError(f"{where}: a header's {what} field is malformed; refused")
    return value


def _header_name(block: bytes, where: str) -> str:
    name = _text(block[0:100], where)
    # The ustar prefix field; in GNU headers these bytes hold other fields.
    if block[257:265] == _POSIX_MAGIC:
        prefix = _text(block[345:500], where)
        if prefix:
            return f"{prefix}/{name}"
    return name


def _text(field: bytes, where: str) -> str:
    """A NUL-terminated header field; bytes after the terminator must be NUL too."""
    value, _, rest = field.partition(b"\0")
    if rest.strip(b"\0"):
        raise TamperedError(f"{where}: a member name holds a NUL byte; refused")
    return _name(value, where)


def _name(raw: bytes, where: str) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TamperedError(f"{where}: a member name is not UTF-8; refused") from None
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in name):
        raise TamperedError(
            f"{where}: member name {name[:100]!r} holds a control character; refused"
        )
    return name


def _long_name(raw: bytes, where: str) -> str:
    """A GNU ``L`` header's data: the name and its NUL terminator."""
    if not raw.endswith(b"\0"):
        raise TamperedError(f"{where}: a long name is not terminated; refused")
    return _text(raw, where)


def _pax(raw: bytes, where: str) -> _Extension:
    """``<length> <key>=<value>\\n`` records, read once from start to end."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(raw):
        space = raw.find(b" ", pos, pos + _MAX_DIGITS + 1)
        length = raw[pos:space]
        if space < 0 or not length.isdigit():
            raise TamperedError(f"{where}: a PAX header is malformed; refused")
        end = pos + int(length)
        key, eq, value = raw[space + 1 : end - 1].partition(b"=")
        if end > len(raw) or end <= space + 1 or raw[end - 1 : end] != b"\n" or not eq:
            raise TamperedError(f"{where}: a PAX header is malformed; refused")
        if key in records:
            raise TamperedError(f"{where}: a PAX header sets {key[:40]!r} twice; refused")
        records[key] = value
        pos = end
    if any(key.startswith(b"GNU.sparse.") for key in records):
        raise TamperedError(f"{where}: a member is a sparse file; archives hold regular files only")
    if records.get(b"hdrcharset", _PAX_UTF8) != _PAX_UTF8:
        raise TamperedError(f"{where}: a PAX header's names are not UTF-8; refused")
    return _Extension(name=_pax_path(records, where), size=_pax_size(records, where))


def _pax_path(records: dict[bytes, bytes], where: str) -> str | None:
    path = records.get(b"path")
    if path is None:
        return None
    if not path:
        # An empty value unsets the key for some readers and names "" for others.
        raise TamperedError(f"{where}: a PAX header has an empty path; refused")
    return _name(path, where)


def _pax_size(records: dict[bytes, bytes], where: str) -> int | None:
    size = records.get(b"size")
    if size is None:
        return None
    if not (size.isdigit() and len(size) <= _MAX_DIGITS):
        raise TamperedError(f"{where}: a PAX header's size {size[:40]!r} is malformed; refused")
    return int(size)
