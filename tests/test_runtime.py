"""Model.predict: every input form gives the answers of the form onnxruntime takes as is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from packager._io.table import from_mapping
from packager.errors import IncompatibleModelError, UsageError
from packager.runtime import Model


@pytest.fixture(scope="module")
def model(bundles: dict[str, Path]) -> Model:
    return Model.open(bundles["1.0.0"])


def test_every_input_form_gives_the_same_answers(
    model: Model, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = iris
    rows = x[[0, 60, 120]]
    direct = rows.astype(np.float32)
    expected = model.predict(direct)
    assert model.feeds(direct)["input"] is direct  # given to onnxruntime unconverted
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    forms = [
        rows,  # float64: cast
        rows.tolist(),
        {"input": direct},
        from_mapping({f"x{i}": rows[:, i] for i in range(4)}, named=False),
        {name: rows[:, i] for i, name in enumerate(columns)},
    ]
    for form in forms:
        got = model.predict(form)
        assert sorted(got) == sorted(expected) == ["label", "probabilities"]
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-6)
    one = model.predict(direct[0])  # one row, 1-D
    np.testing.assert_array_equal(one["label"], expected["label"][:1])


def test_a_run_without_a_required_input_is_refused_before_onnxruntime_runs(model: Model) -> None:
    with pytest.raises(IncompatibleModelError, match=r"required inputs \['input'\] are missing"):
        model.run({})


def test_bad_inputs_are_refused(model: Model) -> None:
    with pytest.raises(UsageError, match="float32"):
        model.predict(np.array([["a", "b", "c", "d"]]))
    with pytest.raises(IncompatibleModelError, match="onnxruntime failed"):
        model.predict(np.zeros((1, 3), dtype=np.float32))
