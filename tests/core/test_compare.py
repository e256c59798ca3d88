"""compare_outputs: tolerances, labels, NaN/inf, structural problems, the worst lines."""

from __future__ import annotations

import numpy as np
import pytest

from packager.core.compare import compare_outputs

NAN = float("nan")
INF = float("inf")


def test_identical_outputs_agree() -> None:
    out = {"label": np.array([0, 1, 2]), "probabilities": np.eye(3, dtype=np.float32)}
    result = compare_outputs(out, out, rtol=0, atol=0)
    assert result.ok
    assert result.rows == 3
    assert result.worst == ()
    assert result.max_abs_diff == 0
    assert result.max_rel_diff == 0
    assert result.label_agreement == 1.0


def test_tolerance_is_atol_plus_rtol_times_expected() -> None:
    expected = {"y": np.array([100.0, 0.0])}
    at_limit = {"y": np.array([100.0 + 0.5 + 1.0, 0.5])}  # atol 0.5 + rtol 0.01 * 100
    result = compare_outputs(at_limit, expected, rtol=0.01, atol=0.5)
    assert result.ok
    assert result.max_abs_diff == pytest.approx(1.5)
    assert result.max_rel_diff == pytest.approx(0.015)  # the zero expected value is skipped
    beyond = {"y": np.array([101.6, 0.5])}
    result = compare_outputs(beyond, expected, rtol=0.01, atol=0.5)
    assert not result.ok
    assert result.worst == ("output 'y' row 0: got 101.6, expected 100 (|diff| 1.6 > allowed 1.5)",)


def test_float32_actual_against_float64_expected() -> None:
    expected = {"p": np.array([[0.1, 0.9]])}
    actual = {"p": expected["p"].astype(np.float32)}
    assert compare_outputs(actual, expected, rtol=1e-6, atol=0).ok
    assert not compare_outputs(actual, expected, rtol=0, atol=0).ok


@pytest.mark.parametrize(
    ("got", "want", "ok"),
    [
        (NAN, NAN, True),
        (1.0, NAN, False),
        (NAN, 1.0, False),
        (INF, INF, True),
        (-INF, INF, False),
        (1.0, INF, False),  # inf <= inf must not make any value match infinity
        (INF, 1.0, False),
    ],
)
def test_nan_and_infinity(got: float, want: float, ok: bool) -> None:
    result = compare_outputs({"y": np.array([got])}, {"y": np.array([want])}, rtol=1, atol=1)
    assert result.ok is ok
    if not ok:
        assert result.max_abs_diff == INF


def test_labels_must_agree_exactly() -> None:
    expected = {"label": np.array(["a", "b", "c", "d"]), "p": np.zeros((4, 2))}
    actual = {"label": np.array(["a", "x", "c", "y"], dtype=object), "p": np.zeros((4, 2))}
    result = compare_outputs(actual, expected, rtol=1, atol=1, label_outputs=["label"])
    assert not result.ok
    assert result.label_agreement == 0.5
    assert result.worst == (
        "output 'label' row 1: got 'x', expected 'b'",
        "output 'label' row 3: got 'y', expected 'd'",
    )
    assert result.max_abs_diff == 0  # labels are not part of the numeric differences


def test_integer_outputs_are_exact_even_when_not_named_as_labels() -> None:
    result = compare_outputs({"k": np.array([1, 2])}, {"k": np.array([1, 3])}, rtol=1, atol=10)
    assert not result.ok
    assert result.label_agreement == 0.5


def test_a_named_float_label_is_exact() -> None:
    expected = {"y": np.array([1.0, NAN])}
    assert compare_outputs(expected, expected, rtol=0, atol=0, label_outputs={"y"}).ok
    close = {"y": np.array([1.0 + 1e-12, NAN])}
    assert not compare_outputs(close, expected, rtol=1, atol=1, label_outputs={"y"}).ok


def test_text_never_equals_numbers() -> None:
    result = compare_outputs({"label": np.array(["1"])}, {"label": np.array([1])}, rtol=0, atol=0)
    assert not result.ok
    assert result.label_agreement == 0.0


def test_label_agreement_counts_rows_over_every_label_output() -> None:
    expected = {"a": np.array([[1, 1], [2, 2], [3, 3]]), "b": np.array(["x", "y", "z"])}
    actual = {"a": np.array([[1, 1], [2, 9], [3, 3]]), "b": np.array(["x", "y", "q"])}
    result = compare_outputs(actual, expected, rtol=0, atol=0)
    assert result.label_agreement == pytest.approx(1 / 3)


def test_missing_output_and_shape_mismatch() -> None:
    expected = {"a": np.zeros(3), "b": np.zeros((3, 1))}
    result = compare_outputs({"b": np.zeros(3)}, expected, rtol=0, atol=0)
    assert not result.ok
    assert result.worst == (
        "output 'a' is missing from the results",
        "output 'b' has shape (3,), expected (3, 1)",
    )


def test_text_where_numbers_are_expected() -> None:
    result = compare_outputs({"y": np.array(["a"])}, {"y": np.array([1.0])}, rtol=0, atol=0)
    assert not result.ok
    assert "dtype" in result.worst[0]


def test_extra_actual_outputs_are_ignored() -> None:
    result = compare_outputs(
        {"y": np.ones(2), "debug": np.zeros(5)}, {"y": np.ones(2)}, rtol=0, atol=0
    )
    assert result.ok


def test_nothing_to_compare_fails_closed() -> None:
    result = compare_outputs({"y": np.ones(2)}, {}, rtol=0, atol=0)
    assert not result.ok
    assert result.worst == ("there are no expected outputs to compare",)


def test_worst_lists_at_most_five_largest_first() -> None:
    expected = {"y": np.zeros((10, 2))}
    actual = {"y": np.arange(20, dtype=np.float64).reshape(10, 2)}
    result = compare_outputs(actual, expected, rtol=0, atol=0.5)
    assert len(result.worst) == 5
    assert result.worst[0].startswith("output 'y' row 9 column 1: got 19")
    assert result.worst[4].startswith("output 'y' row 7 column 1: got 15")
    assert result.max_abs_diff == 19


def test_worst_across_outputs_is_ordered_by_excess() -> None:
    expected = {"a": np.zeros(2), "b": np.zeros(2)}
    actual = {"a": np.array([0.0, 2.0]), "b": np.array([5.0, 0.0])}
    result = compare_outputs(actual, expected, rtol=0, atol=0.1)
    assert [line.split(":")[0] for line in result.worst] == ["output 'b' row 0", "output 'a' row 1"]
