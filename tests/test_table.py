"""Reading sample tables (.csv, .npy, .json, mappings) and turning them into ONNX feeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from packager._io.table import Table, from_mapping, read_table, to_feeds
from packager.core.manifest import TensorSpec
from packager.errors import UsageError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def assert_no_objects(table: Table) -> None:
    for values in table.values:
        assert values.dtype.kind in "fiU", values.dtype
        assert values.ndim == 1
        assert len(values) == table.rows


# --- CSV ---------------------------------------------------------------------------------


def test_csv_types_columns_by_their_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "a,b,c,d\n1,red,2.5,\n2,blue,,\n3,7,1e3,\n")
    table = read_table(path)
    assert table.columns == ("a", "b", "c", "d")
    assert table.named
    assert table.rows == 3
    a, b, c, d = table.values
    assert a.dtype == np.float64
    assert a.tolist() == [1.0, 2.0, 3.0]
    assert b.dtype.kind == "U"
    assert b.tolist() == ["red", "blue", "7"]
    assert c[0] == 2.5
    assert np.isnan(c[1])
    assert c[2] == 1000.0
    assert d.dtype == np.float64
    assert np.isnan(d).all()
    assert_no_objects(table)


def test_csv_reads_quoted_cells_a_bom_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", '\ufeffname,x\n"Smith, J",1\n\n"O""Neil",2\n')
    table = read_table(path)
    assert table.columns == ("name", "x")
    assert table.values[0].tolist() == ["Smith, J", 'O"Neil']


def test_csv_digit_separators_are_text(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "s.csv", "code\n1_000\n2\n"))
    assert table.values[0].tolist() == ["1_000", "2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("a,b\n", "no rows"),
        ("a,b\n1,2\n3\n", "row 3 has 1 cells"),
        ("a,,c\n1,2,3\n", "column 2 has no name"),
        ("a,a\n1,2\n", "appears twice"),
    ],
)
def test_csv_problems_are_usage_errors(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        read_table(write(tmp_path, "s.csv", content))


def test_csv_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not UTF-8"):
        read_table(write(tmp_path, "s.csv", b"a\n\xff\n"))


# --- .npy --------------------------------------------------------------------------------


def test_npy_gives_positional_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.arange(6, dtype=np.float32).reshape(3, 2))
    table = read_table(path)
    assert table.columns == ("x0", "x1")
    assert not table.named
    assert table.values[1].dtype == np.float64
    assert table.values[1].tolist() == [1.0, 3.0, 5.0]


def test_npy_integers_stay_integers(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.array([[1, 2], [3, 4]], dtype=np.int32))
    assert all(v.dtype == np.int64 for v in read_table(path).values)


def test_pickled_npy_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.array([[object()]], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="pickle"):
        read_table(path)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.arange(3.0), "2-D"),
        (np.array([["a", "b"]]), "numbers"),
        (np.zeros((0, 2)), "no rows"),
        (np.zeros((2, 0)), "no columns"),
    ],
)
def test_npy_must_be_a_2d_numeric_table(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "s.npy"
    np.save(path, array)
    with pytest.raises(UsageError, match=message):
        read_table(path)


def test_corrupt_npy_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"not a valid \.npy file"):
        read_table(write(tmp_path, "s.npy", b"\x93NUMPY garbage"))
    with pytest.raises(UsageError, match=r"not a \.npy file"):
        read_table(write(tmp_path, "t.npy", b"a,b\n1,2\n"))


# --- JSON --------------------------------------------------------------------------------


def test_json_rows_are_positional(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "s.json", json.dumps([[1, "a", 0.5], [2, "b", None]])))
    assert table.columns == ("x0", "x1", "x2")
    assert not table.named
    assert table.values[0].dtype == np.int64  # every value an int
    assert table.values[1].tolist() == ["a", "b"]
    assert table.values[2][0] == 0.5
    assert np.isnan(table.values[2][1])
    assert_no_objects(table)


def test_json_records_are_named(tmp_path: Path) -> None:
    doc = [{"color": "red", "n": 1, "x": 1}, {"n": 2, "color": "blue", "x": 2.5}]
    table = read_table(write(tmp_path, "s.json", json.dumps(doc)))
    assert table.columns == ("color", "n", "x")
    assert table.named
    assert table.values[1].dtype == np.int64
    assert table.values[2].dtype == np.float64  # an int and a float make floats


def test_a_null_in_a_text_column_is_empty_text_as_a_blank_csv_cell(tmp_path: Path) -> None:
    from_json = read_table(write(tmp_path, "s.json", json.dumps({"c": ["a", None]})))
    from_csv = read_table(write(tmp_path, "s.csv", 'c\na\n""\n'))
    assert from_json.values[0].tolist() == from_csv.values[0].tolist() == ["a", ""]
    assert from_mapping({"c": ["a", float("nan")]}).values[0].tolist() == ["a", ""]


def test_json_columns_are_named(tmp_path: Path) -> None:
    table = read_table(write(tmp_path, "s.json", json.dumps({"b": [True, False], "a": [1, 2]})))
    assert table.columns == ("b", "a")
    assert table.values[0].tolist() == [1, 0]  # booleans count as 0 and 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([[1, 2], [3]], "row 1 has 1 values"),
        ([{"a": 1}, {"b": 2}], "record 1 has keys"),
        ({"a": [1, 2], "b": [1]}, "different lengths"),
        ({"a": 1}, "must be a list"),
        ([[1, "x"], ["y", 2]], "mixes text"),
        ([["a"], [1.5]], "mixes text"),
        ([[[1, 2]]], "holds a list"),
        ([[2**70]], "int64"),
        ([[1], {"a": 1}], "all be lists or all be objects"),
        ([], "expected a list"),
        ({}, "no columns"),
        ({"a": []}, "no rows"),
        ("text", "expected a list"),
    ],
)
def test_json_problems_are_usage_errors(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        read_table(write(tmp_path, "s.json", json.dumps(doc)))


def test_invalid_json_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not valid JSON"):
        read_table(write(tmp_path, "s.json", "[1, 2"))


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown table format '\.parquet'"):
        read_table(write(tmp_path, "s.parquet", "x"))
    with pytest.raises(UsageError, match="cannot read"):
        read_table(tmp_path / "absent.csv")


# --- from_mapping ------------------------------------------------------------------------


def test_from_mapping_takes_lists_and_arrays() -> None:
    table = from_mapping(
        {"a": [1, 2], "b": np.array([0.5, 1.5], dtype=np.float32), "c": np.array(["x", "y"])}
    )
    assert table.named
    assert table.rows == 2
    assert [v.dtype.kind for v in table.values] == ["i", "f", "U"]
    assert table.values[1].dtype == np.float64
    object_text = from_mapping({"s": np.array(["p", "q"], dtype=object)})
    assert object_text.values[0].dtype.kind == "U"  # never an object array


def test_from_mapping_takes_a_dataframe() -> None:
    import pandas as pd

    frame = pd.DataFrame({"color": ["red", "blue"], "size": [1.0, 2.0], "n": [3, 4]})
    table = from_mapping(frame)
    assert table.columns == ("color", "size", "n")
    assert [v.dtype.kind for v in table.values] == ["U", "f", "i"]


def test_from_mapping_positional() -> None:
    table = from_mapping({"x0": [1.0], "x1": [2.0]}, named=False)
    assert not table.named


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "no columns"),
        ({"a": []}, "no rows"),
        ({"a": [1], "b": [1, 2]}, "different lengths"),
        ({"a": np.zeros((2, 2))}, "1-D"),
        ({"a": "text"}, "sequence"),
        ({"a": [{"x": 1}]}, "holds a dict"),
        ({1: [1]}, "column names must be text"),
    ],
)
def test_from_mapping_problems(data: dict[object, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        from_mapping(data)  # type: ignore[arg-type]


# --- to_feeds ----------------------------------------------------------------------------


def test_one_matrix_input_gets_the_columns_stacked() -> None:
    table = from_mapping({"a": [1, 2], "b": [0.5, 1.5], "c": [3.0, 4.0]})
    feeds = to_feeds(table, [TensorSpec("input", "float32", (None, 3))])
    assert list(feeds) == ["input"]
    assert feeds["input"].dtype == np.float32
    np.testing.assert_array_equal(feeds["input"], [[1, 0.5, 3], [2, 1.5, 4]])


def test_positional_table_stacks_even_with_one_column() -> None:
    table = from_mapping({"x0": [1.0, 2.0]}, named=False)
    feeds = to_feeds(table, [TensorSpec("input", "float64", ("N", 1))])
    assert feeds["input"].shape == (2, 1)
    assert feeds["input"].dtype == np.float64


def test_column_count_must_fit_a_fixed_width() -> None:
    table = from_mapping({"a": [1.0], "b": [2.0]})
    with pytest.raises(UsageError, match="takes 3 column"):
        to_feeds(table, [TensorSpec("input", "float32", (None, 3))])


def test_fixed_batch_size_must_match_the_rows() -> None:
    table = from_mapping({"a": [1.0, 2.0], "b": [2.0, 3.0]})
    with pytest.raises(UsageError, match="exactly 1 row"):
        to_feeds(table, [TensorSpec("input", "float32", (1, 2))])


def test_several_inputs_map_by_name() -> None:
    table = from_mapping({"size": [1.5, 2.5], "color": ["red", "blue"], "n": [1, 2]})
    inputs = [
        TensorSpec("color", "string", (None, 1)),
        TensorSpec("n", "int64", (None, 1)),
        TensorSpec("size", "float32", (None, 1)),
    ]
    feeds = to_feeds(table, inputs)
    assert list(feeds) == ["color", "n", "size"]
    assert feeds["color"].dtype.kind == "U"
    assert feeds["color"].shape == (2, 1)
    assert feeds["n"].dtype == np.int64
    assert feeds["n"].tolist() == [[1], [2]]
    assert feeds["size"].dtype == np.float32


def test_rank_one_inputs_get_flat_columns() -> None:
    table = from_mapping({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    inputs = [TensorSpec("a", "float32", ("N",)), TensorSpec("b", "float32", ("N",))]
    assert to_feeds(table, inputs)["a"].shape == (2,)


def test_missing_and_extra_columns_are_named() -> None:
    table = from_mapping({"a": [1.0], "zz": [2.0]})
    inputs = [TensorSpec("a", "float32", (None, 1)), TensorSpec("b", "float32", (None, 1))]
    with pytest.raises(UsageError, match=r"missing column\(s\) 'b'; unexpected column\(s\) 'zz'"):
        to_feeds(table, inputs)


def test_positional_rows_feed_several_inputs_in_their_order_or_nothing() -> None:
    inputs = [TensorSpec("a", "float32", (None, 1)), TensorSpec("b", "string", (None, 1))]
    table = from_mapping({"x0": [1.0, 3.0], "x1": ["u", "v"]}, named=False)
    feeds = to_feeds(table, inputs)
    assert feeds["a"].tolist() == [[1.0], [3.0]] and feeds["b"].tolist() == [["u"], ["v"]]
    three = from_mapping({"x0": [1.0], "x1": [2.0], "x2": [3.0]}, named=False)
    with pytest.raises(UsageError, match="column names, or rows of 2 values in that order"):
        to_feeds(three, inputs)


@pytest.mark.parametrize(
    ("values", "dtype", "message"),
    [
        (["a", "b"], "float32", "holds text"),
        ([1.0, 2.0], "string", "holds numbers"),
        ([1.5, 2.0], "int64", "whole numbers"),
        ([float("nan"), 2.0], "int64", "whole numbers"),
        ([300, 2], "uint8", "outside 0..255"),
        ([2, 1], "bool", "outside 0..1"),
        ([1.0, 2.0], "complex64", "cannot feed"),
    ],
)
def test_casts_that_would_change_values_are_refused(
    values: list[object], dtype: str, message: str
) -> None:
    table = from_mapping({"a": values})
    with pytest.raises(UsageError, match=message):
        to_feeds(table, [TensorSpec("a", dtype, (None, 1))])


def test_int64_bounds_are_checked_exactly() -> None:
    table = from_mapping({"a": [2.0**63]})  # one past int64's largest value
    with pytest.raises(UsageError, match="outside"):
        to_feeds(table, [TensorSpec("a", "int64", (None, 1))])


def test_higher_rank_inputs_take_each_row_in_c_order() -> None:
    values = np.arange(2 * 12, dtype=np.float64).reshape(2, 12)
    table = from_mapping({f"x{i}": values[:, i] for i in range(12)}, named=False)
    feeds = to_feeds(table, [TensorSpec("image", "float32", ("batch", 3, 2, 2))])
    assert feeds["image"].dtype == np.float32
    np.testing.assert_array_equal(feeds["image"], values.reshape(2, 3, 2, 2))


def test_higher_rank_inputs_need_the_right_width_and_fixed_dimensions() -> None:
    table = from_mapping({"x0": [1.0]}, named=False)
    with pytest.raises(UsageError, match=r"rows of shape \[3, 8, 8\] \(192 values\)"):
        to_feeds(table, [TensorSpec("image", "float32", (None, 3, 8, 8))])
    with pytest.raises(UsageError, match="every dimension after the batch is fixed"):
        to_feeds(table, [TensorSpec("image", "float32", (None, 1, "h", "w"))])


def test_table_module_imports_numpy_only() -> None:
    code = (
        "import sys, packager._io.table, packager._io.testvectors, packager.core.compare;"
        "heavy = {'pandas', 'sklearn', 'skl2onnx', 'onnxruntime'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("size", [1, 4, 64, 65, 10_000])
def test_has_nan_finds_a_nan_anywhere_and_nothing_else(size: int) -> None:
    from packager._io.table import has_nan

    values = np.arange(size, dtype=np.float32).reshape(1, -1)
    assert not has_nan(values)
    extremes = values.copy()
    extremes[0, 0] = np.inf
    extremes[0, -1] = -np.inf if size > 1 else np.inf
    assert not has_nan(extremes)
    assert not has_nan(np.full((1, size), 3e38, dtype=np.float32))
    for where in {0, size // 2, size - 1}:
        holed = values.copy()
        holed[0, where] = np.nan
        assert has_nan(holed)
