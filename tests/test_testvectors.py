"""testvectors.npz: byte-reproducible writing, np.load compatibility, refusing bad archives."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from packager._io.testvectors import read_testvectors, write_testvectors
from packager.errors import ConversionError, SmokeTestError

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z


def vectors() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    inputs = {
        "input": np.arange(12, dtype=np.float32).reshape(4, 3),
        "color": np.array([["red"], ["blue"], ["green"], ["red"]]),
    }
    outputs = {
        "label": np.array(["a", "b", "a", "c"], dtype=object),  # as onnxruntime returns text
        "probabilities": np.linspace(0, 1, 8).reshape(4, 2),
        "dense/BiasAdd:0": np.array([1, 2, 3, 4], dtype=np.int64),
    }
    return inputs, outputs


def test_round_trip(tmp_path: Path) -> None:
    inputs, outputs = vectors()
    path = tmp_path / "testvectors.npz"
    write_testvectors(path, inputs=inputs, outputs=outputs, epoch=EPOCH)
    got_inputs, got_outputs = read_testvectors(path)
    assert list(got_inputs) == ["color", "input"]  # sorted
    assert list(got_outputs) == ["dense/BiasAdd:0", "label", "probabilities"]
    for name, array in inputs.items():
        np.testing.assert_array_equal(got_inputs[name], array)
        assert got_inputs[name].dtype == array.dtype
    assert got_outputs["label"].dtype.kind == "U"  # object text is stored as unicode
    np.testing.assert_array_equal(got_outputs["label"], outputs["label"].astype(str))
    np.testing.assert_array_equal(got_outputs["probabilities"], outputs["probabilities"])


def test_same_vectors_give_the_same_bytes(tmp_path: Path) -> None:
    inputs, outputs = vectors()
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    write_testvectors(first, inputs=inputs, outputs=outputs, epoch=EPOCH)
    # Same values, other insertion order, memory layout and byte order: same bytes.
    relaid_inputs = {
        "color": inputs["color"],
        "input": np.asfortranarray(inputs["input"]).astype(">f4"),
    }
    relaid_outputs = dict(reversed(list(outputs.items())))
    write_testvectors(second, inputs=relaid_inputs, outputs=relaid_outputs, epoch=EPOCH)
    assert first.read_bytes() == second.read_bytes()
    write_testvectors(second, inputs=inputs, outputs=outputs, epoch=EPOCH + 3600)
    assert first.read_bytes() != second.read_bytes()  # the epoch dates the members


def test_members_are_sorted_stored_and_dated(tmp_path: Path) -> None:
    inputs, outputs = vectors()
    path = tmp_path / "t.npz"
    write_testvectors(path, inputs=inputs, outputs=outputs, epoch=EPOCH)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert names[0] == "inputs/color.npy"
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    assert {i.date_time for i in infos} == {(2023, 11, 14, 22, 13, 20)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize(
    ("epoch", "date_time"),
    [(0, (1980, 1, 1, 0, 0, 0)), (-5, (1980, 1, 1, 0, 0, 0)), (10**12, (2107, 12, 31, 23, 59, 58))],
)
def test_epoch_is_clamped_to_what_zip_can_record(
    tmp_path: Path, epoch: int, date_time: tuple[int, ...]
) -> None:
    path = tmp_path / "t.npz"
    write_testvectors(path, inputs={}, outputs={"y": np.zeros(1)}, epoch=epoch)
    with zipfile.ZipFile(path) as zf:
        assert zf.infolist()[0].date_time == date_time


def test_numpy_reads_it_without_pickle(tmp_path: Path) -> None:
    inputs, outputs = vectors()
    path = tmp_path / "t.npz"
    write_testvectors(path, inputs=inputs, outputs=outputs, epoch=EPOCH)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == [
            "inputs/color",
            "inputs/input",
            "outputs/dense/BiasAdd:0",
            "outputs/label",
            "outputs/probabilities",
        ]
        np.testing.assert_array_equal(npz["inputs/input"], inputs["input"])


def test_arrays_that_need_pickle_are_not_written(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    with pytest.raises(ConversionError, match="Python objects"):
        write_testvectors(
            path, inputs={}, outputs={"y": np.array([{"a": 1}], dtype=object)}, epoch=EPOCH
        )
    with pytest.raises(ConversionError, match="cannot be stored"):
        write_testvectors(path, inputs={}, outputs={"y": np.array([1j])}, epoch=EPOCH)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


GOOD = npy(np.zeros(2))


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"outputs/y.npy": GOOD, "evil.npy": GOOD}, "unexpected member 'evil.npy'"),
        ({"outputs/y.npy": GOOD, "../outputs/z.npy": GOOD}, "unexpected member"),
        ({"outputs/y.npy": GOOD, "inputs/x.txt": b"x"}, "unexpected member"),
        ({"outputs/y.npy": GOOD, "inputs/": b""}, "unexpected member"),
        ({"outputs/.npy": GOOD}, "unexpected member"),
        ({"inputs/x.npy": GOOD}, "no expected outputs"),
        (
            {"outputs/y.npy": npy(np.array([object()], dtype=object), allow_pickle=True)},
            "dtype object is not allowed",
        ),
        ({"outputs/y.npy": npy(np.array([1 + 2j]))}, "not allowed"),
        ({"outputs/y.npy": npy(np.zeros(1000))[:200]}, "the data has"),
        ({"outputs/y.npy": GOOD + b"\0" * 8}, "the data has"),
        ({"outputs/y.npy": b"not an npy file at all"}, "not a valid .npy header"),
    ],
)
def test_bad_members_are_refused(tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    path = write_zip(tmp_path / "t.npz", members)
    with pytest.raises(SmokeTestError, match=message):
        read_testvectors(path)


def test_a_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    )
    path = write_zip(tmp_path / "t.npz", {"outputs/y.npy": header.getvalue() + b"\0" * 8})
    with pytest.raises(SmokeTestError, match="the data has 8 bytes"):
        read_testvectors(path)


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("outputs/y.npy", GOOD)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("outputs/y.npy", GOOD)
    with pytest.raises(SmokeTestError, match="appears twice"):
        read_testvectors(path)


def test_size_caps(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "t.npz", {"outputs/a.npy": npy(np.zeros(100)), "outputs/b.npy": GOOD}
    )
    with pytest.raises(SmokeTestError, match="larger than 500 bytes"):
        read_testvectors(path, max_member_bytes=500)
    with pytest.raises(SmokeTestError, match="more than 1 test vector"):
        read_testvectors(path, max_members=1)
    with pytest.raises(SmokeTestError, match="exceed 1000 bytes"):
        read_testvectors(path, max_total_bytes=1000)


def test_deflated_members_are_read(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("outputs/y.npy", npy(np.arange(5.0)))
    _, outputs = read_testvectors(path)
    np.testing.assert_array_equal(outputs["y"], np.arange(5.0))


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SmokeTestError, match="not a readable test vector file"):
        read_testvectors(path)
    with pytest.raises(SmokeTestError, match="not a readable"):
        read_testvectors(tmp_path / "absent.npz")


def test_vectors_an_instance_would_refuse_are_not_written(tmp_path: Path) -> None:
    """A bundle whose test vectors an instance will not read is refused when it is made,
    not when it is installed."""
    path = tmp_path / "tv.npz"
    x = np.zeros((2, 2), dtype=np.float32)
    wide = {f"o{i}": np.zeros(1, dtype=np.float32) for i in range(1024)}
    with pytest.raises(ConversionError, match="more than an instance reads"):
        write_testvectors(path, inputs={"x": x}, outputs=wide, epoch=0)
    big = np.zeros((257 << 20) // 4, dtype=np.float32)  # 257 MiB
    with pytest.raises(ConversionError, match="larger than an instance reads"):
        write_testvectors(path, inputs={"x": x}, outputs={"y": big}, epoch=0)
    halves = {f"y{i}": np.zeros((200 << 20) // 4, dtype=np.float32) for i in range(6)}
    with pytest.raises(ConversionError, match="larger than an instance reads"):
        write_testvectors(path, inputs={"x": x}, outputs=halves, epoch=0)
    assert not path.exists()
    # At the limits, written and read back.
    write_testvectors(path, inputs={"x": x}, outputs=dict(list(wide.items())[:1023]), epoch=0)
    assert len(read_testvectors(path)[1]) == 1023
