"""Tables of sample or input data, and turning them into ONNX feeds.

A :class:`Table` is what ``--sample`` files and ``Model.predict`` inputs become:
named or positional columns, each a 1-D numpy array that is float64, int64 or
numpy unicode. Nothing here uses object arrays, so everything a table produces
can be saved with ``allow_pickle=False``.

Only numpy is imported: the instance side reads tables too.
"""

from __future__ import annotations

import csv
import io
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from packager.core.jsonio import Limits, loads
from packager.core.manifest import TensorSpec
from packager.errors import UsageError

MAX_TABLE_BYTES = 256 << 20
# Integers get a few more digits than int64 holds so that the column check, not the
# parser, says which value does not fit.
_JSON_LIMITS = Limits(max_bytes=MAX_TABLE_BYTES, max_int_digits=40, int64=False)
NUMERIC_DTYPES = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64"}
    | {"uint8", "uint16", "uint32", "uint64", "bool"}
)
_INTEGER_DTYPES = frozenset(d for d in NUMERIC_DTYPES if "int" in d)


@dataclass(frozen=True)
class Table:
    """Columns of equal length: float64, int64 or numpy unicode, never object arrays.

    ``named`` is False when the names were made up (``x0``, ``x1``, ...) because
    the file had none (.npy, JSON rows).
    """

    columns: tuple[str, ...]
    values: tuple[np.ndarray, ...]
    named: bool

    @property
    def rows(self) -> int:
        return len(self.values[0]) if self.values else 0


FORMATS = ("csv", "json", "ndjson", "npy")
STDIN = Path("<stdin>")


def sniff_format(data: bytes) -> str:
    """The format of table bytes with no file name: .npy by its magic, JSON when the text
    is one JSON document starting with ``[`` or ``{``, NDJSON when each line is one, else
    CSV."""
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text.startswith((b"[", b"{")):
        return "csv"
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and all(line.lstrip().startswith((b"[", b"{")) for line in lines):
        try:
            loads(lines[0], what="line 1", error=UsageError, limits=_JSON_LIMITS)
        except UsageError:
            return "json"  # the first line is not a whole document: one document over lines
        return "ndjson"
    return "json"


def parse_table(data: bytes, fmt: str | None, where: Path) -> Table:
    """A table from bytes in ``fmt`` (one of :data:`FORMATS`; None: :func:`sniff_format`).
    NDJSON is one row (a list) or one record (an object) per line.

    Raises:
        UsageError: as :func:`read_table`, or an unknown format.
    """
    fmt = fmt or sniff_format(data)
    if fmt == "csv":
        table = _parse_csv(data, where)
    elif fmt == "npy":
        table = _parse_npy(data, where)
    elif fmt == "json":
        table = _parse_json(data, where)
    elif fmt == "ndjson":
        lines = [line for line in data.splitlines() if line.strip()]
        table = _parse_json(b"[" + b",".join(lines) + b"]", where)
    else:
        raise UsageError(f"unknown table format {fmt!r}; use one of {', '.join(FORMATS)}")
    if table.rows == 0:
        raise UsageError(f"{where}: the table has no rows")
    return table


def read_stdin(fmt: str | None) -> Table:
    """The table on standard input (``--input -``), at most :data:`MAX_TABLE_BYTES`.

    Raises:
        UsageError: too large, empty, or not a table in ``fmt`` (see :func:`parse_table`).
    """
    import sys

    data = sys.stdin.buffer.read(MAX_TABLE_BYTES + 1)
    if len(data) > MAX_TABLE_BYTES:
        raise UsageError(f"standard input: larger than {MAX_TABLE_BYTES >> 20} MiB")
    if not data.strip():
        raise UsageError("standard input is empty: pipe rows in (CSV with a header, JSON, NDJSON)")
    return parse_table(data, fmt, STDIN)


def read_input(path: Path, fmt: str | None) -> Table:
    """``predict --input``: standard input for ``-``; else the file, in ``fmt`` or as its
    name says (.csv, .json, .ndjson, .npy), sniffed when neither says.

    Raises:
        UsageError: as :func:`parse_table`, or the file cannot be read.
    """
    if str(path) == "-":
        return read_stdin(fmt)
    suffix = path.suffix.lower().lstrip(".")
    if fmt is None and suffix in ("csv", "json", "npy"):
        return read_table(path)
    try:
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise UsageError(f"{path}: larger than {MAX_TABLE_BYTES >> 20} MiB")
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from e
    return parse_table(data, fmt or (suffix if suffix in FORMATS else None), path)


def read_table(path: Path) -> Table:
    """Read a .csv (with header), .npy (2-D numeric) or .json table.

    A CSV column is numeric (float64) when every cell is a number as Python's
    float() reads it ("nan" and "inf" included); empty cells are NaN there.
    JSON may be a list of rows (``[[1, 2], ...]``), a list of records
    (``[{"a": 1}, ...]``) or an object of columns (``{"a": [1, ...]}``); a JSON
    column of whole numbers is int64, null is NaN.

    Raises:
        UsageError: the file cannot be read, has an unknown extension, is
            empty, ragged, pickled, or holds values that are neither numbers
            nor text.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npy", ".json"):
        raise UsageError(f"{path}: unknown table format {suffix!r}; use .csv, .npy or .json")
    try:
        size = path.stat().st_size
        if size > MAX_TABLE_BYTES:
            raise UsageError(
                f"{path}: larger than {MAX_TABLE_BYTES >> 20} MiB; use a smaller sample"
            )
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from e
    if suffix == ".csv":
        table = _parse_csv(data, path)
    elif suffix == ".npy":
        table = _parse_npy(data, path)
    else:
        table = _parse_json(data, path)
    if table.rows == 0:
        raise UsageError(f"{path}: the table has no rows")
    return table


def from_mapping(data: Mapping[str, Any], *, named: bool = True) -> Table:
    """Build a table from ``{column: sequence}`` (a dict, or a pandas DataFrame).

    ``named=False`` marks the names as made up (columns of a bare 2-D array),
    so :func:`to_feeds` matches them by position, never by name.

    Raises:
        UsageError: no columns, no rows, columns of different lengths, a column
            that is not 1-D, or values that are neither numbers nor text.
    """
    names: list[str] = []
    values: list[np.ndarray] = []
    for name, column in data.items():
        if not isinstance(name, str):
            raise UsageError(f"column names must be text, got {name!r}")
        names.append(name)
        values.append(_column_from_any(name, column))
    table = _make_table(names, values, named=named, where="input")
    if table.rows == 0:
        raise UsageError("input: the table has no rows")
    return table


def to_feeds(table: Table, inputs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Turn a table into onnxruntime feeds for ``inputs``.

    One input of rank 2 fed from a positional table or from several columns
    gets all columns stacked in order, ``[rows, ncols]``; one input of higher
    rank with fixed dimensions after the batch (e.g. ``[N, 1, 28, 28]``) gets
    each row's columns in C order (784 columns here). Otherwise columns map
    to inputs by name, each ``[rows, 1]`` (``[rows]`` for rank-1 inputs).
    Values are cast to the input's dtype.

    Raises:
        UsageError: columns are missing or extra, the column count or row
            count does not fit the input's shape, or a value cannot be cast
            (text for a number input, numbers for a text input, a fraction or
            NaN for an integer input).
    """
    if not inputs:
        raise UsageError("the model has no inputs to feed")
    if len(inputs) == 1 and (not table.named or len(table.columns) > 1):
        spec = inputs[0]
        rank = _rank(spec)
        if rank == 2:
            return {spec.name: _stack(table, spec)}
        if rank == 1 and len(table.columns) == 1:
            return {spec.name: _feed_column(table, 0, spec)}
        if rank > 2:
            return {spec.name: _stack_reshaped(table, spec)}
        raise UsageError(
            f"input {spec.name!r} has rank {rank}: a table of {len(table.columns)} "
            "column(s) can feed only inputs of rank 1 or 2"
        )
    if not table.named and len(table.columns) == len(inputs):
        # Rows without names give the inputs in the manifest's order.
        table = Table(tuple(s.name for s in inputs), table.values, named=True)
    if not table.named:
        wanted = ", ".join(repr(s.name) for s in inputs)
        raise UsageError(
            f"the model has inputs {wanted}: give a table with column names, or rows of "
            f"{len(inputs)} values in that order"
        )
    check_columns(table, [s.name for s in inputs], "the table does not match the model's inputs")
    feeds = {}
    for spec in inputs:
        rank = _rank(spec)
        if rank not in (1, 2):
            raise UsageError(f"input {spec.name!r} has rank {rank}: a column feeds rank 1 or 2")
        column = _feed_column(table, table.columns.index(spec.name), spec)
        feeds[spec.name] = column if rank == 1 else column.reshape(-1, 1)
    return feeds


# Up to this many values, a Python loop beats a numpy reduction (see has_nan).
_FEW = 64


def has_nan(array: np.ndarray) -> bool:
    """Whether the float ``array`` holds a NaN. On the hot path of predict (one row), a
    few values are checked in Python: a numpy reduction there costs more than the model,
    and slows the onnxruntime call that follows it as well (measured)."""
    if array.size <= _FEW:
        values = (array if array.ndim == 1 else array.ravel()).tolist()
        total = sum(values)
        # NaN unless every value is a number; inf - inf is NaN too, hence the second look.
        return total != total and any(value != value for value in values)
    return bool(np.isnan(array).any())


def refuse_missing(feeds: Mapping[str, np.ndarray], columns: Sequence[str] | None = None) -> None:
    """Refuse a missing value in onnxruntime feeds: NaN in a number input, empty or blank
    text in a text input. For a model that was not packaged as taking them: converted
    graphs answer NaN with a confident-looking prediction where the original refused it.

    ``columns`` names the columns of the table that was stacked into a single input.

    Raises:
        UsageError: the first missing value, by column (or input and position) and row.
    """
    for name, feed in feeds.items():
        if feed.dtype.kind == "f":
            if not has_nan(feed):
                continue
            missing, what = np.isnan(feed), "NaN"
        elif feed.dtype.kind == "U":
            missing, what = np.char.str_len(np.char.strip(feed)) == 0, "empty"
        elif feed.dtype.kind == "O":  # strings as objects
            blank = [type(v) is str and not v.strip() for v in feed.flat]
            missing, what = np.array(blank, dtype=bool).reshape(feed.shape), "empty"
        else:
            continue
        if missing.any():
            index = tuple(int(i) for i in np.argwhere(missing)[0])
            raise UsageError(
                f"{_cell(name, index, feed.shape, columns)} is missing ({what}), and the model "
                "does not take missing values: fill it in or leave the row out"
            )


def _cell(name: str, index: tuple[int, ...], shape: tuple[int, ...], columns: object) -> str:
    """Where a value of the feed ``name`` is, in the words of the table it came from."""
    row = index[0]
    if len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1):
        return f"column {name!r} row {row}"
    if len(shape) == 2:
        column = index[1]
        if isinstance(columns, Sequence) and len(columns) == shape[1]:
            return f"column {columns[column]!r} row {row}"
        return f"column {column} of input {name!r}, row {row}"
    return f"input {name!r} row {row} at {list(index[1:])}"


def check_columns(table: Table, expected: Sequence[str], mismatch: str) -> None:
    """Check that ``table`` has exactly the columns ``expected``, in any order.

    Raises:
        UsageError: ``mismatch``, then the missing and the unexpected columns.
    """
    missing = [n for n in expected if n not in table.columns]
    extra = [c for c in table.columns if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing column(s) " + ", ".join(repr(n) for n in missing))
        if extra:
            parts.append("unexpected column(s) " + ", ".join(repr(c) for c in extra))
        raise UsageError(f"{mismatch}: " + "; ".join(parts))


def _rank(spec: TensorSpec) -> int:
    # An input without a declared shape is fed like the usual [batch, features].
    return 2 if spec.shape is None else len(spec.shape)


def _check_rows(table: Table, spec: TensorSpec) -> None:
    if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] != table.rows:
        raise UsageError(
            f"input {spec.name!r} takes exactly {spec.shape[0]} row(s), the table has {table.rows}"
        )


def _stack(table: Table, spec: TensorSpec) -> np.ndarray:
    _check_rows(table, spec)
    width = None if spec.shape is None else spec.shape[1]
    if isinstance(width, int) and width != len(table.columns):
        raise UsageError(
            f"input {spec.name!r} takes {width} column(s), the table has {len(table.columns)}"
        )
    columns = [_cast(table.columns[i], table.values[i], spec) for i in range(len(table.columns))]
    return np.stack(columns, axis=1)


def _stack_reshaped(table: Table, spec: TensorSpec) -> np.ndarray:
    shape = spec.shape or ()
    dims = [d for d in shape[1:] if isinstance(d, int)]
    if len(dims) != len(shape) - 1:
        raise UsageError(
            f"input {spec.name!r} has shape {list(shape)}: a table can feed it only when "
            "every dimension after the batch is fixed"
        )
    width = int(np.prod(dims))
    if width != len(table.columns):
        raise UsageError(
            f"input {spec.name!r} takes rows of shape {dims} ({width} values), "
            f"the table has {len(table.columns)} column(s)"
        )
    flat = _stack(table, TensorSpec(spec.name, spec.dtype, (shape[0], width)))
    return flat.reshape((table.rows, *dims))


def _feed_column(table: Table, index: int, spec: TensorSpec) -> np.ndarray:
    _check_rows(table, spec)
    return _cast(table.columns[index], table.values[index], spec)


def _cast(column: str, values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Cast one column to the input's dtype, refusing casts that would change values."""
    text = values.dtype.kind == "U"
    if spec.dtype == "string":
        if not text:
            # Numbers that were categories in training arrive as numbers here only
            # when the sample typed them so; guessing their text form would be wrong.
            raise UsageError(
                f"column {column!r} holds numbers but input {spec.name!r} takes text: "
                "give it as text (JSON strings)"
            )
        return values
    if spec.dtype not in NUMERIC_DTYPES:
        raise UsageError(f"input {spec.name!r} has dtype {spec.dtype}, which tables cannot feed")
    if text:
        raise UsageError(
            f"column {column!r} holds text but input {spec.name!r} takes {spec.dtype} numbers"
        )
    if spec.dtype in _INTEGER_DTYPES or spec.dtype == "bool":
        integral = np.isfinite(values) & (values == np.round(values))
        if not integral.all():
            row = int(np.argmin(integral))
            raise UsageError(
                f"column {column!r} row {row} is {values[row]!r}, "
                f"but input {spec.name!r} takes whole numbers ({spec.dtype})"
            )
        info = np.iinfo(spec.dtype) if spec.dtype != "bool" else None
        low, high = (0, 1) if info is None else (int(info.min), int(info.max))
        # Python compares floats with ints exactly; numpy would round 2**63 - 1 first.
        if values.size and (values.min().item() < low or values.max().item() > high):
            raise UsageError(
                f"column {column!r} has values outside {low}..{high} for input {spec.name!r}"
            )
    return values.astype(spec.dtype)


def _make_table(
    names: Sequence[str], values: Sequence[np.ndarray], *, named: bool, where: object
) -> Table:
    if not names:
        raise UsageError(f"{where}: the table has no columns")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UsageError(f"{where}: column {dup!r} appears twice")
    lengths = {len(v) for v in values}
    if len(lengths) != 1:
        raise UsageError(f"{where}: columns have different lengths {sorted(lengths)}")
    return Table(tuple(names), tuple(values), named)


def _positional_names(n: int) -> list[str]:
    return [f"x{i}" for i in range(n)]


def _csv_number(cell: str) -> float | None:
    """The cell's value, NaN for an empty cell, None when it is not a number."""
    if not cell.strip():
        return float("nan")
    if "_" in cell:
        # float() accepts digit separators ("1_000"); a CSV cell like that is text.
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _parse_csv(data: bytes, where: Path) -> Table:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise UsageError(f"{where}: not valid CSV: {e}") from e
    rows = [r for r in rows if r]  # csv yields [] for blank lines
    if not rows:
        raise UsageError(f"{where}: the file is empty; a CSV sample needs a header row")
    header, body = rows[0], rows[1:]
    for i, name in enumerate(header):
        if not name.strip():
            raise UsageError(f"{where}: header column {i + 1} has no name")
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise UsageError(
                f"{where}: row {lineno} has {len(row)} cells, the header has {len(header)}"
            )
    values = []
    for i in range(len(header)):
        cells = [row[i] for row in body]
        parsed = [_csv_number(c) for c in cells]
        if all(n is not None for n in parsed):
            values.append(np.array(parsed, dtype=np.float64))
        else:
            values.append(np.array(cells, dtype=str))
    return _make_table(header, values, named=True, where=where)


def _parse_npy(data: bytes, where: Path) -> Table:
    if not data.startswith(b"\x93NUMPY"):
        # np.load would take anything else for a pickle and blame allow_pickle.
        raise UsageError(f"{where}: not a .npy file (save it with numpy.save)")
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UsageError(f"{where}: holds Python objects (pickle); save numbers only") from e
        raise UsageError(f"{where}: not a valid .npy file: {e}") from e
    except (OSError, EOFError) as e:
        raise UsageError(f"{where}: not a valid .npy file: {e}") from e
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        shape = getattr(array, "shape", None)
        raise UsageError(f"{where}: a .npy sample must be a 2-D array (rows, columns), got {shape}")
    if array.dtype.kind not in "biuf":
        raise UsageError(f"{where}: a .npy sample must hold numbers, got dtype {array.dtype}")
    if array.shape[1] == 0:
        raise UsageError(f"{where}: the table has no columns")
    if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise UsageError(f"{where}: values do not fit in int64")
    target = np.float64 if array.dtype.kind == "f" else np.int64
    columns = [np.ascontiguousarray(array[:, i], dtype=target) for i in range(array.shape[1])]
    return _make_table(_positional_names(array.shape[1]), columns, named=False, where=where)


def _parse_json(data: bytes, where: Path) -> Table:
    doc = loads(data, what=str(where), error=UsageError, limits=_JSON_LIMITS)
    if isinstance(doc, dict):
        names = list(doc)
        for name in names:
            if not isinstance(doc[name], list):
                raise UsageError(f"{where}: column {name!r} must be a list of values")
        columns = [_column_from_values(name, doc[name], where) for name in names]
        return _make_table(names, columns, named=True, where=where)
    if not isinstance(doc, list) or not doc:
        raise UsageError(
            f"{where}: expected a list of rows, a list of records or an object of columns"
        )
    if all(isinstance(r, list) for r in doc):
        width = len(doc[0])
        for i, row in enumerate(doc):
            if len(row) != width:
                raise UsageError(f"{where}: row {i} has {len(row)} values, row 0 has {width}")
        names = _positional_names(width)
        columns = [_column_from_values(n, [r[i] for r in doc], where) for i, n in enumerate(names)]
        return _make_table(names, columns, named=False, where=where)
    if all(isinstance(r, dict) for r in doc):
        names = list(doc[0])
        for i, record in enumerate(doc):
            if set(record) != set(names):
                raise UsageError(
                    f"{where}: record {i} has keys {sorted(record)}, record 0 has {sorted(names)}"
                )
        columns = [_column_from_values(n, [r[n] for r in doc], where) for n in names]
        return _make_table(names, columns, named=True, where=where)
    raise UsageError(f"{where}: rows must all be lists or all be objects")


def _column_from_any(name: str, column: Any) -> np.ndarray:
    """A column from a numpy array, pandas Series or plain sequence."""
    if isinstance(column, (str, bytes)) or not isinstance(column, Iterable):
        raise UsageError(
            f"column {name!r} must be a sequence of values, got {type(column).__name__}"
        )
    if isinstance(column, np.ndarray) or hasattr(column, "__array__"):
        array = np.asarray(column)
        if array.ndim != 1:
            raise UsageError(f"column {name!r} must be 1-D, got shape {array.shape}")
        if array.dtype.kind in "biu":
            if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
                raise UsageError(f"column {name!r} has values that do not fit in int64")
            return array.astype(np.int64)
        if array.dtype.kind == "f":
            return array.astype(np.float64)
        if array.dtype.kind == "U":
            return array
        if array.dtype.kind != "O":
            raise UsageError(f"column {name!r} has dtype {array.dtype}; use numbers or text")
        column = array.tolist()
    return _column_from_values(name, list(column), "input")


def _column_from_values(name: str, items: Sequence[Any], where: object) -> np.ndarray:
    """Type a column of Python (or numpy scalar) values.

    All whole numbers -> int64; numbers with fractions or nulls -> float64
    (null is NaN); all text -> unicode, where a null (or NaN, as pandas marks a missing
    string) is empty text, as a blank CSV cell is. Booleans count as 0 and 1.
    """
    kinds = set()
    for item in items:
        if item is None or (isinstance(item, float) and item != item):
            kinds.add("null")
        elif isinstance(item, str):
            kinds.add("text")
        elif isinstance(item, (bool, np.bool_, numbers.Integral)):
            kinds.add("int")
        elif isinstance(item, numbers.Real):
            kinds.add("float")
        else:
            raise UsageError(
                f"{where}: column {name!r} holds a {type(item).__name__}; use numbers or text"
            )
    if "text" in kinds:
        if not kinds <= {"text", "null"}:
            raise UsageError(f"{where}: column {name!r} mixes text with numbers")
        return np.array([i if isinstance(i, str) else "" for i in items], dtype=str)
    if kinds <= {"int"}:
        try:
            return np.array([int(i) for i in items], dtype=np.int64)
        except OverflowError as e:
            raise UsageError(
                f"{where}: column {name!r} has integers that do not fit in int64"
            ) from e
    return np.array([np.nan if i is None else float(i) for i in items], dtype=np.float64)
