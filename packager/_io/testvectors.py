"""testvectors.npz: sample inputs and the outputs the original model gave.

The file is a zip that ``np.load`` also reads (members ``inputs/<name>.npy``
and ``outputs/<name>.npy``), written byte for byte the same from the same
arrays and epoch: members sorted, stored uncompressed (deflate output depends
on the zlib build), fixed timestamps and attributes, no pickles.

Reading never unpickles and never trusts a header: member names, sizes,
dtypes and shapes are checked before any array is built. Only numpy is used.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from packager._io.fs import atomic_write
from packager.errors import ConversionError, SmokeTestError

MAX_MEMBERS = 1024
MAX_MEMBER_BYTES = 256 << 20
MAX_TOTAL_BYTES = 1 << 30
# Matched against the whole name: with re.match and "$", "outputs/y.npy\n" would read as y.
_MEMBER_RE = re.compile(r"(inputs|outputs)/(.+)\.npy", re.DOTALL)
# Kinds that round-trip through .npy without pickle: bool, ints, floats, unicode.
_STORABLE_KINDS = frozenset("biufU")
# A regular rw-r--r-- file: Unix mode bits go in the high 16 bits of the attribute.
_EXTERNAL_ATTR = 0o100644 << 16
_UNIX = 3
_ZIP_MIN = dt.datetime(1980, 1, 1, tzinfo=dt.UTC)
_ZIP_MAX = dt.datetime(2107, 12, 31, 23, 59, 58, tzinfo=dt.UTC)


def write_testvectors(
    path: Path,
    *,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    epoch: int,
) -> None:
    """Write the test vectors atomically; the same arrays and epoch give the same bytes.

    ``epoch`` (seconds, e.g. SOURCE_DATE_EPOCH) dates every member, clamped to
    the range a zip can record (1980-2107).

    Raises:
        ConversionError: an array cannot be stored without pickle (objects
            other than text, structured or complex values), a name is empty, or the
            vectors are larger than :func:`read_testvectors` takes (an instance would
            refuse the bundle).
        OSError: the file cannot be written.
    """
    members = [(f"inputs/{n}.npy", a) for n, a in inputs.items()]
    members += [(f"outputs/{n}.npy", a) for n, a in outputs.items()]
    members.sort(key=lambda m: m[0])
    if len(members) > MAX_MEMBERS:
        raise ConversionError(
            f"{len(members)} test vector arrays, more than an instance reads ({MAX_MEMBERS}): "
            "a model of that many inputs and outputs cannot be smoke-tested"
        )
    date_time = _zip_date_time(epoch)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for member, array in members:
            if not _MEMBER_RE.fullmatch(member) or "\0" in member:
                # zipfile cuts names at NUL: the name read back would differ.
                raise ConversionError(f"test vector name {member!r} is empty or holds NUL")
            info = zipfile.ZipInfo(member, date_time=date_time)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = _EXTERNAL_ATTR
            info.create_system = _UNIX  # ZipInfo defaults to the platform running us
            data = _npy_bytes(member, array)
            if len(data) > MAX_MEMBER_BYTES or buffer.tell() + len(data) > MAX_TOTAL_BYTES:
                raise ConversionError(
                    f"the test vectors are larger than an instance reads ({member} is "
                    f"{len(data)} bytes; at most {MAX_MEMBER_BYTES} a member and "
                    f"{MAX_TOTAL_BYTES} in all): package with fewer sample rows"
                )
            zf.writestr(info, data)
    atomic_write(path, buffer.getvalue(), mode=0o644)  # bundle files are world-readable


def read_testvectors(
    path: Path,
    *,
    max_members: int = MAX_MEMBERS,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read ``(inputs, outputs)``, each keyed by tensor name in sorted order.

    Raises:
        SmokeTestError: the file is not a zip, has members outside inputs/ and
            outputs/, duplicate or oversized members, too many members, object
            or other non-numeric arrays, a malformed .npy, or no outputs.
    """
    inputs: dict[str, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise SmokeTestError(f"{path}: more than {max_members} test vector files")
            seen: set[str] = set()
            for info in infos:
                match = _MEMBER_RE.fullmatch(info.filename)
                if not match or info.is_dir():
                    raise SmokeTestError(
                        f"{path}: unexpected member {info.filename!r}; "
                        "only inputs/<name>.npy and outputs/<name>.npy belong here"
                    )
                if info.filename in seen:
                    raise SmokeTestError(f"{path}: member {info.filename!r} appears twice")
                seen.add(info.filename)
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise SmokeTestError(
                        f"{path}: member {info.filename!r} uses an unknown compression"
                    )
                if info.file_size > max_member_bytes:
                    raise SmokeTestError(
                        f"{path}: member {info.filename!r} is larger than {max_member_bytes} bytes"
                    )
                with zf.open(info) as f:
                    # The declared size is the zip's word; read one byte more to catch a lie.
                    data = f.read(max_member_bytes + 1)
                if len(data) > max_member_bytes:
                    raise SmokeTestError(
                        f"{path}: member {info.filename!r} is larger than {max_member_bytes} bytes"
                    )
                total += len(data)
                if total > max_total_bytes:
                    raise SmokeTestError(f"{path}: test vectors exceed {max_total_bytes} bytes")
                kind, name = match.group(1), match.group(2)
                array = _parse_npy(data, f"{path}: {info.filename}")
                (inputs if kind == "inputs" else outputs)[name] = array
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        OSError,
        RuntimeError,
        EOFError,
    ) as e:
        # RuntimeError: encrypted members; zlib.error, EOFError, OSError: corrupt or cut data.
        raise SmokeTestError(f"{path}: not a readable test vector file: {e}") from e
    if not outputs:
        raise SmokeTestError(f"{path}: holds no expected outputs")
    return dict(sorted(inputs.items())), dict(sorted(outputs.items()))


def _zip_date_time(epoch: int) -> tuple[int, int, int, int, int, int]:
    try:
        when = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        when = _ZIP_MIN if epoch < 0 else _ZIP_MAX
    when = min(max(when, _ZIP_MIN), _ZIP_MAX)
    return (when.year, when.month, when.day, when.hour, when.minute, when.second)


def _npy_bytes(member: str, array: np.ndarray) -> bytes:
    """The .npy bytes of ``array`` in one canonical layout: C order, little-endian."""
    array = np.asarray(array)
    if array.dtype.kind == "O":
        # onnxruntime returns text outputs as object arrays of str.
        if not all(isinstance(v, str) for v in array.flat):
            raise ConversionError(f"test vector {member}: holds Python objects; cannot store")
        array = array.astype(str)
    if array.dtype.kind not in _STORABLE_KINDS or array.dtype.names is not None:
        raise ConversionError(f"test vector {member}: dtype {array.dtype} cannot be stored")
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _parse_npy(data: bytes, where: str) -> np.ndarray:
    """Build an array from .npy bytes after checking the header against the data."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise SmokeTestError(f"{where}: unsupported .npy version {version}")
    except ValueError as e:
        raise SmokeTestError(f"{where}: not a valid .npy header: {e}") from e
    if dtype.hasobject or dtype.kind not in _STORABLE_KINDS or dtype.itemsize == 0:
        raise SmokeTestError(f"{where}: dtype {dtype} is not allowed in test vectors")
    if any(dim < 0 for dim in shape):
        raise SmokeTestError(f"{where}: negative dimension in shape {shape}")
    count = 1
    for dim in shape:
        count *= dim
    body = data[stream.tell() :]
    if len(body) != count * dtype.itemsize:
        raise SmokeTestError(
            f"{where}: header says {shape} {dtype} ({count * dtype.itemsize} bytes), "
            f"the data has {len(body)} bytes"
        )
    flat = np.frombuffer(body, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()
