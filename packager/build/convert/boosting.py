"""XGBoost and LightGBM models in skl2onnx conversions, with onnxmltools' tree converters.

XGBClassifier/XGBRegressor and LGBMClassifier/LGBMRegressor are scikit-learn
estimators, so they convert alone or as a pipeline's step like any other; what
skl2onnx lacks is their converters, which onnxmltools has. They are handed to
skl2onnx for one conversion at a time:

- regressors through ``custom_conversion_functions``/``custom_shape_calculators``,
  which skl2onnx keeps for that call;
- classifiers need more: skl2onnx looks their options (``zipmap``, ``nocl``) up
  in its global registry, so :func:`registered` registers them with
  ``skl2onnx.update_registered_converter`` for the duration of the call and
  then puts back whatever was registered before.

onnxmltools' converters write ai.onnx.ml opset 3 trees and stop at default
opset 15, so conversions that include one are capped at :data:`TARGET_OPSET`.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from packager.build.convert.base import require

# The highest opsets onnxmltools 1.16's tree converters write.
TARGET_OPSET = {"": 15, "ai.onnx.ml": 3}
_CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
_REGISTRY_LOCK = threading.Lock()


@dataclass(frozen=True)
class Converters:
    """What a skl2onnx call needs for the boosting models in a pipeline.

    ``framework`` is (library, version) of the last boosting model, None when
    the pipeline holds none; ``target_opset`` and ``converter_version``
    (onnxmltools') are then None too, and skl2onnx uses its own default opset.
    """

    functions: dict[type, Callable[..., None]]
    shape_calculators: dict[type, Callable[..., None]]
    target_opset: dict[str, int] | None
    framework: tuple[str, str] | None
    converter_version: str | None


def boosting_models(model: Any) -> list[Any]:
    """XGBoost and LightGBM estimators in ``model``: itself, or steps of pipelines,
    column transformers and feature unions, in order."""
    found: list[Any] = []
    _walk(model, found)
    return found


def _walk(model: Any, found: list[Any]) -> None:
    if isinstance(model, str):  # "passthrough" / "drop"
        return
    root = type(model).__module__.partition(".")[0]
    if root in ("xgboost", "lightgbm"):
        found.append(model)
        return
    for attr in ("steps", "transformer_list"):
        for _, step in getattr(model, attr, None) or ():
            _walk(step, found)
    for _, step, _ in getattr(model, "transformers", None) or ():
        _walk(step, found)


@contextmanager
def registered(model: Any) -> Iterator[Converters]:
    """Converters for every XGBoost/LightGBM model in ``model``, for one skl2onnx call.

    Raises:
        ConversionError: onnxmltools or skl2onnx is missing; the message names
            the extra to install.
    """
    models = boosting_models(model)
    if not models:
        yield Converters({}, {}, None, None, None)
        return
    from sklearn.base import is_classifier

    shapes = require(
        "skl2onnx.common.shape_calculator", extra="sklearn", purpose="converting tree ensembles"
    )
    functions: dict[type, Callable[..., None]] = {}
    calculators: dict[type, Callable[..., None]] = {}
    classifiers: dict[type, Callable[..., None]] = {}
    framework: tuple[str, str] | None = None
    converter_version = ""
    for estimator in models:
        library = type(estimator).__module__.partition(".")[0]
        converter, version, converter_version = _converter(library)
        framework = (library, version)
        if is_classifier(estimator):
            classifiers[type(estimator)] = converter
        else:
            functions[type(estimator)] = converter
            calculators[type(estimator)] = shapes.calculate_linear_regressor_output_shapes
    with _registered_classifiers(classifiers, shapes.calculate_linear_classifier_output_shapes):
        yield Converters(functions, calculators, dict(TARGET_OPSET), framework, converter_version)


def _converter(library: str) -> tuple[Callable[..., None], str, str]:
    """onnxmltools' converter for the library, the library's and onnxmltools' versions.

    Raises:
        ConversionError: the library or onnxmltools is missing.
    """
    purpose = f"converting {'XGBoost' if library == 'xgboost' else 'LightGBM'} models"
    module = require(library, extra=library, purpose=purpose)
    onnxmltools = require("onnxmltools", extra=library, purpose=purpose)
    version = str(module.__version__)
    if library == "xgboost":
        converters = require(
            "onnxmltools.convert.xgboost.operator_converters.XGBoost",
            extra=library,
            purpose=purpose,
        )
        converter = _xgboost_converter(converters.convert_xgboost)
    else:
        converters = require(
            "onnxmltools.convert.lightgbm.operator_converters.LightGbm",
            extra=library,
            purpose=purpose,
        )
        converter = converters.convert_lightgbm
    return converter, version, str(onnxmltools.__version__)


def _xgboost_converter(convert_xgboost: Callable[..., None]) -> Callable[..., None]:
    def convert(scope: Any, operator: Any, container: Any) -> None:
        model = operator.raw_operator
        booster = model.get_booster()
        if booster.feature_names is not None:
            # onnxmltools reads feature indices from the tree dump, which names
            # features after the training columns when there were names
            # ("Unable to interpret 'petal_width'"); without names it says f0, f1...
            unnamed = booster.copy()
            unnamed.feature_names = None
            model = copy.copy(model)
            model.get_booster = lambda: unnamed
            operator.raw_operator = model
        convert_xgboost(scope, operator, container)

    return convert


@contextmanager
def _registered_classifiers(
    converters: dict[type, Callable[..., None]], shape_calculator: Callable[..., None]
) -> Iterator[None]:
    """Register classifier converters in skl2onnx, then restore what was there before.

    skl2onnx keeps four global tables: model type -> alias, alias -> converter,
    alias -> shape calculator, model type -> parser. Registering writes all four;
    the previous entries are put back (or removed) afterwards, so packager's
    registration never outlives the conversion, nor replaces the caller's own.
    """
    if not converters:
        yield
        return
    from skl2onnx import update_registered_converter
    from skl2onnx._parse import sklearn_parsers_map
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import _converter_pool, _shape_calculator_pool

    with _REGISTRY_LOCK:
        aliases = {model_type: f"Packager{model_type.__name__}" for model_type in converters}
        saved = [
            (table, key, table.get(key, _ABSENT))
            for model_type, alias in aliases.items()
            for table, key in (
                (sklearn_operator_name_map, model_type),
                (sklearn_parsers_map, model_type),
                (_converter_pool, alias),
                (_shape_calculator_pool, alias),
            )
        ]
        try:
            for model_type, converter in converters.items():
                update_registered_converter(
                    model_type,
                    aliases[model_type],
                    shape_calculator,
                    converter,
                    options=_CLASSIFIER_OPTIONS,
                )
            yield
        finally:
            for table, key, value in saved:
                if value is _ABSENT:
                    table.pop(key, None)
                else:
                    table[key] = value


_ABSENT = object()
