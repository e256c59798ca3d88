"""Comparing ONNX outputs with expected outputs within a tolerance.

Used twice with the same rules: at packaging (ONNX vs the original model) and
on the instance (its onnxruntime vs the bundle's test vectors). Pure numpy.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MAX_WORST = 5
# Outputs of these kinds are labels, indices or flags: they must match exactly.
_EXACT_KINDS = frozenset("biuUSO")


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare_outputs`.

    ``max_abs_diff``/``max_rel_diff`` cover the numeric outputs (labels excluded);
    the relative difference skips elements whose expected value is 0.
    ``label_agreement`` is the fraction of rows whose labels all agree, None when
    there are no label outputs. ``worst`` holds at most five lines describing
    the problems found, empty when ``ok``.
    """

    ok: bool
    rows: int
    max_abs_diff: float
    max_rel_diff: float
    label_agreement: float | None
    worst: tuple[str, ...]


def compare_outputs(
    actual: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    *,
    rtol: float,
    atol: float,
    label_outputs: Collection[str] = (),
) -> Comparison:
    """Compare every expected output with the actual one.

    Numeric elements agree when ``|a - e| <= atol + rtol * |e|``; NaN agrees
    with NaN and infinities with themselves. Outputs in ``label_outputs`` and
    outputs holding integers, booleans or text must agree exactly. Outputs in
    ``actual`` that are not expected are ignored; an expected output that is
    missing, or has another shape, fails the comparison. Comparing nothing
    fails too: there would be nothing to trust.

    Never raises for bad data; the problems are in the result.
    """
    import numpy as np  # on first use: the instance's CLI need not load it

    structural: list[str] = []
    label_lines: list[str] = []
    numeric: list[tuple[float, str]] = []  # (how far beyond tolerance, line)
    label_rows: np.ndarray | None = None
    max_abs = 0.0
    max_rel = 0.0
    rows = 0
    for name, exp in expected.items():
        exp = np.asarray(exp)
        rows = max(rows, exp.shape[0] if exp.ndim else 1)
        if name not in actual:
            structural.append(f"output {name!r} is missing from the results")
            continue
        act = np.asarray(actual[name])
        if act.shape != exp.shape:
            structural.append(f"output {name!r} has shape {act.shape}, expected {exp.shape}")
            continue
        if name in label_outputs or exp.dtype.kind in _EXACT_KINDS:
            agree = _exact_agreement(act, exp)
            per_row = _per_row(agree)
            if label_rows is not None and label_rows.shape != per_row.shape:
                structural.append(f"label output {name!r} has another number of rows")
                continue
            label_rows = per_row if label_rows is None else label_rows & per_row
            for row in np.flatnonzero(~per_row)[:MAX_WORST]:
                got, want = _row(act, int(row)), _row(exp, int(row))
                label_lines.append(f"output {name!r} row {row}: got {got}, expected {want}")
            continue
        if act.dtype.kind not in "biuf" or exp.dtype.kind != "f":
            structural.append(f"output {name!r} has dtype {act.dtype}, expected {exp.dtype}")
            continue
        a = act.astype(np.float64)
        e = exp.astype(np.float64)
        same = (np.isnan(a) & np.isnan(e)) | (a == e)
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(same, 0.0, np.abs(a - e))
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
        finite = np.isfinite(e)
        allowed = np.where(finite, atol + rtol * np.abs(np.where(finite, e, 0.0)), 0.0)
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
            nonzero = finite & (e != 0)
            if nonzero.any():
                max_rel = max(max_rel, float((diff[nonzero] / np.abs(e[nonzero])).max()))
        # A non-finite expected value is met only by the same value: inf <= inf is no match.
        bad = ~(same | (finite & (diff <= allowed)))
        if bad.any():
            excess = np.where(bad, diff - allowed, -np.inf)
            order = np.argsort(excess, axis=None, kind="stable")[::-1]
            for flat in order[: min(MAX_WORST, int(bad.sum()))]:
                index = np.unravel_index(int(flat), diff.shape)
                line = (
                    f"output {name!r} {_where(index)}: got {a[index]:.7g}, expected {e[index]:.7g}"
                )
                if finite[index]:
                    line += f" (|diff| {diff[index]:.3g} > allowed {allowed[index]:.3g})"
                numeric.append((float(excess.flat[flat]), line))
    if not expected:
        structural.append("there are no expected outputs to compare")
    numeric.sort(key=lambda item: -item[0])
    worst = [*structural, *label_lines, *(line for _, line in numeric)]
    label_agreement = None
    if label_rows is not None:
        label_agreement = float(label_rows.mean()) if label_rows.size else 1.0
    return Comparison(
        ok=not worst,
        rows=rows,
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        label_agreement=label_agreement,
        worst=tuple(worst[:MAX_WORST]),
    )


def _exact_agreement(act: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """Elementwise exact equality; text never equals a number, NaN equals NaN."""
    import numpy as np  # on first use: the instance's CLI need not load it

    act_text = act.dtype.kind in "USO"
    exp_text = exp.dtype.kind in "USO"
    if act_text or exp_text:
        if act_text != exp_text:
            return np.zeros(exp.shape, dtype=bool)
        return np.asarray(act.astype(str) == exp.astype(str))
    equal = np.asarray(act == exp)
    if act.dtype.kind == "f" or exp.dtype.kind == "f":
        equal |= np.isnan(act.astype(np.float64)) & np.isnan(exp.astype(np.float64))
    return equal


def _per_row(agree: np.ndarray) -> np.ndarray:
    """Whether each row agrees in every element (a scalar output is one row)."""
    import numpy as np  # on first use: the instance's CLI need not load it

    if agree.ndim == 0:
        return agree.reshape(1)
    width = int(np.prod(agree.shape[1:]))
    return np.asarray(agree.reshape(agree.shape[0], width).all(axis=1))


def _row(array: np.ndarray, row: int) -> str:
    import numpy as np  # on first use: the instance's CLI need not load it

    value = array[row] if array.ndim else array
    if isinstance(value, np.ndarray):
        return str(value.tolist())
    return repr(value.item() if isinstance(value, np.generic) else value)


def _where(index: tuple[np.intp, ...]) -> str:
    if not index:
        return "(scalar)"
    if len(index) == 1:
        return f"row {index[0]}"
    rest = ", ".join(str(int(i)) for i in index[1:])
    return f"row {index[0]} column {rest}"
