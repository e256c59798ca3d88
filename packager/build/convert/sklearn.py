"""scikit-learn estimators and pipelines to ONNX with skl2onnx, checked against the original.

Inputs: a model fitted on a DataFrame (it has ``feature_names_in_``) gets one
ONNX input per column, named like the column, shape ``[None, 1]``: string for
text columns, int64 for columns the sample gives as integers (JSON, .npy),
float32 for other numbers (float64 on request, where the model converts in
double precision). Any other model gets one input ``"input"`` of shape
``[None, n_features]``, float32 (string when every column is text).

Outputs: classifiers give ``label`` and ``probabilities`` tensors (ZipMap off); a
classifier without ``predict_proba`` (SVC without probability=True, LinearSVC,
RidgeClassifier) gives ``label`` and ``scores``, its decision scores, which are not
probabilities. Regressors and transformers give one tensor.

The original model runs on exactly the values ONNX sees (the float32 feeds
widened back to float64), so the comparison measures the conversion, not the
rounding of the sample.
"""

from __future__ import annotations

import importlib
import itertools
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from packager._io.table import NUMERIC_DTYPES, Table, check_columns
from packager.build.convert import boosting
from packager.build.convert.base import SKLEARN_EXTRA, Conversion, Options, Original
from packager.build.convert.onnxfile import first_line
from packager.build.convert.parity import Graph, check_parity, run_graph
from packager.core.graph import walk_graphs
from packager.core.manifest import TensorSpec
from packager.errors import ConversionError, PackagerError, UsageError

INPUT_NAME = "input"


def convert_sklearn(model: Any, sample: Table, options: Options) -> Conversion:
    """Convert a fitted estimator or pipeline and check it against the original on ``sample``.

    XGBoost and LightGBM models (their scikit-learn API), alone or inside a
    pipeline, convert with onnxmltools' tree converters (see
    :mod:`packager.build.convert.boosting`).

    Number columns become float32 inputs; with ``options.precision`` "float64"
    they become double inputs where skl2onnx and onnxruntime handle the model in
    double precision, and otherwise stay float32 with the cast recorded and
    the reason in ``notes``.

    Default tolerances: classifiers' labels exactly and probabilities within
    rtol 1e-3, atol 1e-4; regressors rtol 1e-3, atol 1e-4 x max(1, max|y|);
    transformers rtol 1e-3, atol 1e-4. Given ``rtol``/``atol`` override.

    Raises:
        ConversionError: scikit-learn, skl2onnx, pandas, or the XGBoost or
            LightGBM converters are missing (the message names the extra to
            install), the estimator is not a classifier, regressor or
            transformer, or the converter or onnxruntime fails on it.
        UsageError: the model is not fitted, the sample does not fit it, or
            the original model fails on the sample.
        ParityError: ONNX answers differ from the original beyond tolerance;
            the message shows the worst rows.
    """
    sklearn = _require("sklearn")
    skl2onnx = _require("skl2onnx")
    _check_fitted(model)
    task = _task(model)
    names = _feature_names(model)
    table = _prepare(sample, model, names)
    with boosting.registered(model) as converters:
        graph, notes = _graph(model, table, names, converters, precision=options.precision)
    if _scores_only(model):
        notes = (*notes, _SCORES_NOTE.format(estimator=describe(_final(model))))
    source = _source(model, converters, sklearn, skl2onnx)
    return check_parity(
        graph,
        _original(model, task, names, graph.outputs, source),
        options,
        task=task,
        labels=tuple(o.name for o in graph.outputs[:1]) if task in _LABELLED else (),
        source=source,
        scaled=task in ("regression", "clustering", "anomaly"),
        notes=notes,
    )


# Tasks whose first output is a label (class, cluster, or inlier 1 / outlier -1).
_LABELLED = ("classification", "clustering", "anomaly")


def _source(
    model: Any, converters: boosting.Converters, sklearn: Any, skl2onnx: Any
) -> dict[str, str]:
    """The manifest's ``model.source``: the model's framework and what converted it."""
    if converters.framework is not None:
        framework, framework_version = converters.framework
        converter = "skl2onnx+onnxmltools"
        converter_version = f"{skl2onnx.__version__}+{converters.converter_version}"
    else:
        framework, framework_version = "scikit-learn", str(sklearn.__version__)
        converter, converter_version = "skl2onnx", str(skl2onnx.__version__)
    return {
        "framework": framework,
        "frameworkVersion": framework_version,
        "estimator": describe(model),
        "converter": converter,
        "converterVersion": converter_version,
    }


def _graph(
    model: Any,
    table: Table,
    names: tuple[str, ...] | None,
    converters: boosting.Converters,
    *,
    precision: str,
) -> tuple[Graph, tuple[str, ...]]:
    """The graph in the ``precision`` asked for, run once; or a float32 graph and a note
    saying why there is no float64 one.

    Raises:
        ConversionError: the converter, the checker or onnxruntime fails.
        UsageError: the sample does not fit the graph's inputs.
    """
    notes: tuple[str, ...] = ()
    if precision == "float64":
        try:
            return run_graph(_to_onnx(model, table, names, converters, double=True), table), notes
        except ConversionError as e:
            notes = (
                f"no float64 graph for this model ({e}); its inputs are float32 and "
                "float64 values are cast",
            )
    return run_graph(_to_onnx(model, table, names, converters, double=False), table), notes


def _original(
    model: Any,
    task: str,
    names: tuple[str, ...] | None,
    outputs: tuple[TensorSpec, ...],
    source: Mapping[str, str],
) -> Original:
    return Original(
        framework=f"{source['framework']} {source['frameworkVersion']}",
        prepare=lambda feeds: _original_input(feeds, names),
        predict=model.predict if task != "transform" else model.transform,
        outputs=lambda x: _expected(model, task, x, outputs),
    )


def describe(model: Any) -> str:
    """``sklearn.pipeline.Pipeline(StandardScaler, LogisticRegression)``-style name of a model."""
    cls = type(model)
    # The public package: sklearn.ensemble._hist_gradient_boosting.gradient_boosting
    # -> sklearn.ensemble, where users import the class from.
    parts = cls.__module__.split(".")
    public = itertools.takewhile(lambda p: not p.startswith("_"), parts)
    module = ".".join(public) or cls.__module__  # e.g. a class defined in __main__
    return f"{module}.{cls.__qualname__}{_parts(model)}"


def _parts(model: Any) -> str:
    if isinstance(model, str):  # "passthrough" / "drop" steps
        return ""
    steps = getattr(model, "steps", None)
    if steps is None and hasattr(model, "transformers"):
        steps = [(name, est) for name, est, _ in model.transformers]
    if not steps:
        return ""
    names = [est if isinstance(est, str) else type(est).__name__ + _parts(est) for _, est in steps]
    return "(" + ", ".join(names) + ")"


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConversionError(
            f"converting scikit-learn models needs {module}, which is not installed: "
            f"{SKLEARN_EXTRA}"
        ) from e


def _check_fitted(model: Any) -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except NotFittedError as e:
        raise UsageError(f"the {describe(model)} is not fitted: fit it before packaging") from e
    except TypeError as e:  # not an estimator at all (no fit method)
        raise ConversionError(f"{describe(model)} is not a scikit-learn estimator") from e


def _task(model: Any) -> str:
    from sklearn.base import is_classifier, is_outlier_detector, is_regressor

    if is_classifier(model):
        return "classification"
    if is_regressor(model):
        return "regression"
    if is_outlier_detector(model):
        if hasattr(model, "decision_function"):
            return "anomaly"
        raise ConversionError(  # LocalOutlierFactor with novelty=False
            f"{describe(model)} only labels the rows it was fitted on; fit it with "
            "novelty=True to package it for new rows"
        )
    if _is_clusterer(model) and hasattr(model, "predict"):
        return "clustering"
    if hasattr(model, "transform") and not hasattr(model, "predict"):
        return "transform"
    raise ConversionError(
        f"{describe(model)}: packager converts classifiers, regressors, transformers, "
        "clustering models that predict (e.g. KMeans) and novelty or outlier detectors "
        "(e.g. IsolationForest, LocalOutlierFactor(novelty=True), OneClassSVM)"
    )


def _is_clusterer(model: Any) -> bool:
    import sklearn.base

    if hasattr(sklearn.base, "is_clusterer"):  # scikit-learn >= 1.6
        return bool(sklearn.base.is_clusterer(model))
    return getattr(model, "_estimator_type", None) == "clusterer"


def _feature_names(model: Any) -> tuple[str, ...] | None:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else tuple(str(n) for n in names)


def _prepare(sample: Table, model: Any, names: tuple[str, ...] | None) -> Table:
    """The sample with the columns the ONNX inputs will have, in the model's order."""
    if names is None:
        count = getattr(model, "n_features_in_", None)
        if count is None:
            raise ConversionError(f"{describe(model)} does not say how many features it takes")
        if len(sample.columns) != count:
            raise UsageError(
                f"the model takes {count} features, the sample has {len(sample.columns)} columns"
            )
        # The model never saw column names: the sample's are labels only, feed by position.
        return Table(sample.columns, sample.values, named=False)
    if not sample.named:
        # Like scikit-learn with a bare array: columns in training order.
        if len(sample.columns) != len(names):
            raise UsageError(
                f"the model takes {len(names)} columns ({', '.join(names)}), "
                f"the sample has {len(sample.columns)}"
            )
        return Table(names, sample.values, named=True)
    check_columns(sample, names, "the sample does not match the model's columns")
    values = tuple(sample.values[sample.columns.index(n)] for n in names)
    return Table(names, values, named=True)


def _to_onnx(
    model: Any,
    table: Table,
    names: tuple[str, ...] | None,
    converters: boosting.Converters,
    *,
    double: bool,
) -> Any:
    from skl2onnx import convert_sklearn as skl2onnx_convert

    target, initial_types, wanted = _inputs(model, table, names, double=double)
    functions, shape_calculators = _hist_gradient_boosting_converters()
    functions.update(converters.functions)
    shape_calculators.update(converters.shape_calculators)

    def run(target_opset: dict[str, int] | None) -> Any:
        return skl2onnx_convert(
            target,
            initial_types=initial_types,
            options={id(c): {"zipmap": False} for c in _final_classifiers(model)} or None,
            # A fixed name and doc string: the default name is a random uuid.
            name=type(model).__name__,
            doc_string="",
            target_opset=target_opset,
            custom_conversion_functions=functions,
            custom_shape_calculators=shape_calculators,
        )

    try:
        try:
            onnx_model = run(converters.target_opset)
        except RuntimeError as e:
            # skl2onnx 1.20's IsolationForest converter emits ai.onnx.ml 4 tree nodes it then
            # refuses to declare; the ai.onnx.ml version it names gives the same trees.
            ml = _ML_OPSET_ASKED.search(str(e))
            if ml is None or converters.target_opset is not None:
                raise
            onnx_model = run({"": _latest_opset(), "ai.onnx.ml": int(ml.group(1))})
    except PackagerError:
        raise
    except Exception as e:  # skl2onnx raises many types, all meaning "cannot convert"
        raise ConversionError(
            f"skl2onnx cannot convert {describe(model)}: {type(e).__name__}: {first_line(e)}"
        ) from e
    _rename_inputs(onnx_model.graph, wanted)
    if _scores_only(model):
        _name_scores(onnx_model.graph)
    _sort_opsets(onnx_model)
    return onnx_model


_ML_OPSET_ASKED = re.compile(r"target_opset=\{'ai\.onnx\.ml': (\d+)\}")


def _latest_opset() -> int:
    from skl2onnx import get_latest_tested_opset_version

    return int(get_latest_tested_opset_version())


def _inputs(
    model: Any, table: Table, names: tuple[str, ...] | None, *, double: bool
) -> tuple[Any, list[tuple[str, Any]], Sequence[str]]:
    """What skl2onnx converts, its initial types, and the input names the graph must have:
    one array ``input`` for a model that never saw column names, else one input per column.

    Raises:
        UsageError: the sample mixes text and numbers for a model that takes one array.
    """
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    if names is not None:
        types = [
            (n, _column_type(v, double=double)) for n, v in zip(names, table.values, strict=True)
        ]
        target = model if _reads_columns(model) else _with_column_front(model, table)
        return target, types, names
    kinds = {v.dtype.kind for v in table.values}
    if "U" in kinds and kinds != {"U"}:
        raise UsageError("the sample mixes text and number columns, but the model takes one array")
    number = DoubleTensorType if double else FloatTensorType
    tensor = StringTensorType if kinds == {"U"} else number
    return model, [(INPUT_NAME, tensor([None, len(table.columns)]))], [INPUT_NAME]


def _column_type(values: np.ndarray, *, double: bool) -> Any:
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    if values.dtype.kind == "U":
        return StringTensorType([None, 1])
    if values.dtype.kind == "i":
        return Int64TensorType([None, 1])
    return DoubleTensorType([None, 1]) if double else FloatTensorType([None, 1])


def _reads_columns(model: Any) -> bool:
    """True when a ColumnTransformer comes first: skl2onnx feeds it one input per column."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    while isinstance(model, Pipeline):
        model = model.steps[0][1]
    return isinstance(model, ColumnTransformer)


def _with_column_front(model: Any, table: Table) -> Any:
    """The model behind a passthrough ColumnTransformer, for conversion only.

    skl2onnx gives one input per column only to a ColumnTransformer; in front of
    any other model the passthrough step concatenates the columns (casting them
    to one type) into the array the model was trained on. It learns nothing
    from the sample: fitting only records the column names.
    """
    pd = _require("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    frame = pd.DataFrame(dict(zip(table.columns, table.values, strict=True)))
    front = ColumnTransformer([("columns", "passthrough", list(table.columns))]).fit(frame)
    return Pipeline([("columns", front), ("model", model)])


def _final(model: Any) -> Any:
    """The last estimator of a pipeline (of nested pipelines), or the model itself."""
    from sklearn.pipeline import Pipeline

    while isinstance(model, Pipeline):
        model = model.steps[-1][1]
    return model


def _final_classifiers(model: Any) -> list[Any]:
    """The estimator whose outputs skl2onnx would turn into a ZipMap, if it is a classifier
    whose converter has a ZipMap (LinearSVC's has none: it gives no probabilities)."""
    from sklearn.base import is_classifier

    final = _final(model)
    if not is_classifier(final):
        return []
    try:
        from skl2onnx._supported_operators import sklearn_operator_name_map
        from skl2onnx.common._registration import get_converter

        allowed = get_converter(sklearn_operator_name_map[type(final)]).get_allowed_options()
    except (KeyError, ValueError, AttributeError, ImportError):
        return [final]  # a converter registered for this call (XGBoost, LightGBM)
    return [final] if allowed is None or "zipmap" in allowed else []


_SCORES_NOTE = (
    "{estimator} has no predict_proba: its second output holds decision scores, not "
    "probabilities, and is named 'scores'"
)
SCORES = "scores"
PROBABILITIES = "probabilities"


def _scores_only(model: Any) -> bool:
    """A classifier whose second output is decision scores: it has no predict_proba."""
    from sklearn.base import is_classifier

    final = _final(model)
    return is_classifier(final) and not hasattr(final, "predict_proba")


def _name_scores(graph: Any) -> None:
    """Name a classifier's second output ``scores`` when it holds decision scores."""
    outputs = [value.name for value in graph.output]
    if len(outputs) != 2 or outputs[1] != PROBABILITIES:
        raise ConversionError(f"skl2onnx made outputs {outputs} for a classifier")
    if SCORES in _tensor_names(graph):
        raise ConversionError(f"the converted model already has a tensor named {SCORES!r}")
    _rename(graph, {PROBABILITIES: SCORES})


def _hist_gradient_boosting_converters() -> tuple[dict[type, Any], dict[type, Any]]:
    """Converters for HistGradientBoosting* used for this conversion only.

    skl2onnx 1.20 with scikit-learn 1.9 builds ``nodes_missing_value_tracks_true``
    from scikit-learn's tree records as a mix of numpy.uint8 and Python bool, and
    onnx.helper.make_attribute refuses booleans in an ints attribute ("Expected an
    int, got a boolean"). These delegate to skl2onnx's own tree converters with a
    container that passes integer lists as Python ints. They go in through
    ``custom_conversion_functions``, so skl2onnx's registry stays untouched for
    everyone else in the process.
    """
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    converters = {
        HistGradientBoostingClassifier: _hist_gradient_boosting(
            convert_sklearn_random_forest_classifier
        ),
        HistGradientBoostingRegressor: _hist_gradient_boosting(
            convert_sklearn_random_forest_regressor_converter
        ),
    }
    shape_calculators = {
        HistGradientBoostingClassifier: calculate_linear_classifier_output_shapes,
        HistGradientBoostingRegressor: calculate_linear_regressor_output_shapes,
    }
    return converters, shape_calculators


def _hist_gradient_boosting(converter: Callable[..., None]) -> Callable[..., None]:
    def convert(scope: Any, operator: Any, container: Any) -> None:
        categorical = getattr(operator.raw_operator, "is_categorical_", None)
        if categorical is not None and np.any(categorical):
            # skl2onnx reads a categorical split as a threshold split: wrong answers.
            raise ConversionError(
                "skl2onnx cannot convert HistGradientBoosting models with categorical "
                "features; one-hot encode those columns in the pipeline instead"
            )
        converter(scope, operator, _IntAttributes(container))

    return convert


class _IntAttributes:
    """Forwards to a skl2onnx container, turning integer-like attribute lists into ints."""

    def __init__(self, container: Any) -> None:
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, inputs: Any, outputs: Any, *args: Any, **attrs: Any) -> Any:
        fixed = {key: _as_ints(value) for key, value in attrs.items()}
        return self._container.add_node(op_type, inputs, outputs, *args, **fixed)


def _as_ints(value: Any) -> Any:
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, bool | np.bool_ | numbers.Integral) for v in value)
    ):
        return [int(v) for v in value]
    return value


def _rename_inputs(graph: Any, wanted: Sequence[str]) -> None:
    """Give the graph inputs the column names skl2onnx made into identifiers.

    skl2onnx turns "petal length (cm)" into "petal_length__cm_"; callers feed
    by column name, so the inputs take the names back, everywhere they are used.
    """
    current = [value.name for value in graph.input]
    if len(current) != len(wanted):
        raise ConversionError(f"skl2onnx made {len(current)} inputs for {len(wanted)} columns")
    mapping = {old: new for old, new in zip(current, wanted, strict=True) if old != new}
    if not mapping:
        return
    taken = _tensor_names(graph) - set(mapping)
    clash = [new for new in mapping.values() if new in taken]
    if clash:
        raise ConversionError(
            f"column {clash[0]!r} has the name of another tensor in the converted model "
            "(e.g. an output such as 'label'); rename the column and refit"
        )
    _rename(graph, mapping)


def _rename(graph: Any, mapping: Mapping[str, str]) -> None:
    """Rename tensors everywhere they are used, in every subgraph."""
    for sub in walk_graphs(graph):
        for node in sub.node:
            node.input[:] = [mapping.get(n, n) for n in node.input]
            node.output[:] = [mapping.get(n, n) for n in node.output]
        for value in (*sub.input, *sub.output, *sub.value_info):
            value.name = mapping.get(value.name, value.name)


def _tensor_names(graph: Any) -> set[str]:
    names: set[str] = set()
    for sub in walk_graphs(graph):
        for node in sub.node:
            names.update(node.input)
            names.update(node.output)
        names.update(v.name for v in (*sub.input, *sub.output, *sub.value_info))
        names.update(t.name for t in sub.initializer)
    names.discard("")  # an omitted optional input
    return names


def _sort_opsets(model: Any) -> None:
    """One opset import per domain, sorted by domain.

    skl2onnx lists the default domain twice and in an order that depends on
    Python's string hashing, so the same model could serialize differently
    from one run to the next.
    """
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        versions[opset.domain] = max(versions.get(opset.domain, 0), int(opset.version))
    del model.opset_import[:]
    for domain in sorted(versions):
        model.opset_import.add(domain=domain, version=versions[domain])


def _original_input(feeds: Mapping[str, np.ndarray], names: tuple[str, ...] | None) -> Any:
    """What the original model gets: the ONNX feeds, float32 widened to float64."""
    if names is None:
        return _widen(feeds[INPUT_NAME])
    pd = _require("pandas")
    return pd.DataFrame({n: _widen(feeds[n][:, 0]) for n in names}, columns=list(names))


def _widen(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float64) if values.dtype.kind == "f" else values


def _expected(
    model: Any, task: str, x: Any, outputs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """The original model's outputs, keyed and shaped like the ONNX outputs."""
    if not outputs or (task not in _LABELLED and len(outputs) != 1):
        raise ConversionError(f"skl2onnx made {len(outputs)} outputs for a {task} model")
    try:
        if task in ("clustering", "anomaly"):
            return _labels_and_scores(model, task, x, outputs)
        if task == "classification":
            label = outputs[0]
            expected = {label.name: _labels(np.asarray(model.predict(x)), label)}
            if len(outputs) > 1 and hasattr(model, "predict_proba"):
                probabilities = np.asarray(model.predict_proba(x), dtype=np.float64)
                expected[outputs[1].name] = _shaped(probabilities, outputs[1])
            elif len(outputs) > 1 and hasattr(model, "decision_function"):
                scores = np.asarray(model.decision_function(x), dtype=np.float64)
                # One score per class is compared; a binary model's one column is laid
                # out by each converter its own way, and its label is compared anyway.
                shape = outputs[1].shape
                if scores.ndim == 2 or (shape is not None and shape[-1] == 1):
                    expected[outputs[1].name] = _shaped(scores, outputs[1])
            return expected
        result = model.predict(x) if task == "regression" else model.transform(x)
    except PackagerError:
        raise
    except Exception as e:  # whatever the estimator raises on data it refuses
        raise UsageError(
            f"the original {describe(model)} fails on the sample: {type(e).__name__}: "
            f"{first_line(e)}"
        ) from e
    if hasattr(result, "toarray"):  # sparse output (e.g. OneHotEncoder's default)
        result = result.toarray()
    return {outputs[0].name: _shaped(np.asarray(result, dtype=np.float64), outputs[0])}


def _labels_and_scores(
    model: Any, task: str, x: Any, outputs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """A clustering model's labels and distances to each centre (``transform``), or a
    detector's labels (1 inlier, -1 outlier) and scores (``decision_function``)."""
    label = outputs[0]
    expected = {label.name: _shaped(_labels(np.asarray(model.predict(x)), label), label)}
    if len(outputs) > 1:
        scores = model.transform(x) if task == "clustering" else model.decision_function(x)
        expected[outputs[1].name] = _shaped(np.asarray(scores, dtype=np.float64), outputs[1])
    return expected


def _labels(labels: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Labels in the ONNX label's dtype when that changes no value (text stays text)."""
    if spec.dtype == "string" or labels.dtype.kind in "OU":
        return labels.astype(str)
    if spec.dtype in NUMERIC_DTYPES:
        cast = labels.astype(spec.dtype)
        if np.array_equal(cast, labels):
            return cast
    return labels


def _shaped(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """scikit-learn's (n,) as ONNX's (n, 1) and back; other shapes as they are."""
    if spec.shape is None:
        return values
    if len(spec.shape) == 2 and values.ndim == 1:
        return values.reshape(-1, 1)
    if len(spec.shape) == 1 and values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    return values
