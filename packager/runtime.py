"""Running installed bundles with onnxruntime: ``load(name).predict(...)`` and smoke tests.

Nothing on the way to ``packager --help`` or ``packager list`` imports this module, and
onnxruntime itself is imported inside the functions that need it.

``Model.predict`` is on a service's hot path: one row through a small model takes
onnxruntime a few microseconds, so everything that can be worked out once (output
names, input dtypes) is worked out when the model is loaded, and a 2-D array of the
input's own dtype goes to onnxruntime as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from packager._io.table import Table, from_mapping, has_nan, refuse_missing, to_feeds
from packager.core.compare import Comparison, compare_outputs
from packager.core.compat import check_runtime
from packager.core.graph import check_graph
from packager.core.manifest import MANIFEST, Manifest, TensorSpec, parse_manifest
from packager.errors import IncompatibleModelError, SmokeTestError, UsageError

if TYPE_CHECKING:
    import onnxruntime


@cache
def runtime_opsets() -> dict[str, int]:
    """The highest opset per domain that the installed onnxruntime has CPU kernels for."""
    from onnxruntime.capi import _pybind_state

    opsets: dict[str, int] = {}
    for kernel in _pybind_state.get_all_opkernel_def():
        domain = kernel.domain or "ai.onnx"
        opsets[domain] = max(opsets.get(domain, 0), kernel.version_range[0])
    return opsets


def runtime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


# Binary-search bounds for the IR probe: every onnxruntime packager supports loads
# IR 7 (ONNX 1.7), and no IR version will reach 1024 in this project's lifetime.
_IR_KNOWN_LOADABLE = 7
_IR_SEARCH_LIMIT = 1024


@cache
def runtime_ir_version() -> int:
    """The highest ONNX IR version the installed onnxruntime loads.

    onnxruntime has no API for it, so it is measured: a one-node model is
    stamped with an IR version and loaded, and a binary search finds the
    highest version that loads (a few milliseconds, once per process).

    Raises:
        IncompatibleModelError: the runtime loads not even IR 7.
    """
    if not _loads_ir(_IR_KNOWN_LOADABLE):
        raise IncompatibleModelError(
            f"onnxruntime {runtime_version()} does not load ONNX IR {_IR_KNOWN_LOADABLE} "
            "models; install a current onnxruntime"
        )
    low, high = _IR_KNOWN_LOADABLE, _IR_SEARCH_LIMIT  # loads at low; assume not at high
    while high - low > 1:
        middle = (low + high) // 2
        if _loads_ir(middle):
            low = middle
        else:
            high = middle
    return low


def _loads_ir(ir_version: int) -> bool:
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "ir_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    # Opset 7 has Identity and every onnxruntime that reads IR 7 implements it.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = ir_version
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        onnxruntime.InferenceSession(
            model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception:  # onnxruntime's load failure: this IR version is not readable
        return False
    return True


def check_compatible(manifest: Manifest) -> None:
    """Refuse a model this instance's onnxruntime cannot load (opsets, IR version, minimum).

    Raises:
        IncompatibleModelError: the runtime is too old; the message names the
            onnxruntime release needed.
    """
    check_runtime(
        model_opsets=manifest.model.opsets,
        model_ir_version=manifest.model.ir_version,
        min_runtime=manifest.runtime.onnxruntime,
        runtime_version=runtime_version(),
        runtime_opsets=runtime_opsets(),
        runtime_ir_version=runtime_ir_version(),
    )


def open_session(
    model_path: Path, *, threads: int = 0, keep_weights_mapped: bool = False
) -> onnxruntime.InferenceSession:
    """Create a CPU inference session; ``threads`` 0 lets onnxruntime choose.

    ``keep_weights_mapped``: for a model whose weights are external data, which
    onnxruntime maps from their files rather than reading them. Two session steps would
    make a second copy of them in memory: prepacking (MatMul and Gemm weights copied into
    packed buffers) and constant folding (whole initializers read in to fold the nodes
    they feed). Without both the weights stay in the page cache, shared by every process
    that loads the model, and a session costs little more than the weights' size; batched
    MatMul/Gemm then packs as it runs, which is slower for large batches.

    Raises:
        IncompatibleModelError: onnxruntime cannot load the graph.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    disabled: list[str] | None = None
    if keep_weights_mapped:
        options.add_session_config_entry("session.disable_prepacking", "1")
        disabled = ["ConstantFolding"]
    try:
        return onnxruntime.InferenceSession(
            str(model_path),
            sess_options=options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=disabled,
        )
    except Exception as e:  # onnxruntime raises bare RuntimeError subclasses from C++
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IncompatibleModelError(
            f"onnxruntime {runtime_version()} cannot load {model_path.name}: {first_line[:300]}"
        ) from e


def _direct_run(session: onnxruntime.InferenceSession) -> Any:
    """``session.run`` without its Python wrapper, where this onnxruntime has the session
    object it wraps (``run(output_names, feeds, run_options)``).

    The wrapper looks at the feeds before the run (required inputs given, no OrtValue of
    another device, no graph capture), which costs about a quarter of a small model's
    run: a microsecond or so in every answer of ``packager serve``. Feeds made here are
    checked already (names, dtypes, shapes), and onnxruntime's C++ checks them again;
    :meth:`Model.run` looks for the required inputs itself (see there).
    """
    inner = getattr(session, "_sess", None)
    run = getattr(inner, "run", None)
    return session.run if run is None else run


class Model:
    """An installed, verified bundle ready to predict.

    Attributes:
        directory: the bundle directory.
        manifest: the bundle's validated manifest.
    """

    def __init__(
        self, directory: Path, manifest: Manifest, *, threads: int = 0, prepack: bool = False
    ) -> None:
        """Check the graph against the manifest, then load it.

        A model with external weights is loaded with its weights left mapped from their
        files (see :func:`open_session`): memory about the weights' size, shared between
        processes. ``prepack`` lets onnxruntime prepack them instead: faster large
        batches through big MatMul/Gemm weights, at twice the memory.

        Raises:
            UsageError: the model file cannot be read.
            TamperedError: the graph's external data points outside the files
                the manifest lists as weights, or its IR version or opsets
                differ from the manifest's.
            IncompatibleModelError: onnxruntime cannot load the graph.
        """
        self.directory = directory
        self.manifest = manifest
        model_path = directory / manifest.model.path
        try:
            model_bytes = model_path.read_bytes()
        except OSError as e:
            raise UsageError(f"cannot read {model_path}: {e.strerror}") from e
        # Before onnxruntime sees the graph: it would follow any external-data path.
        check_graph(model_bytes, manifest)
        mapped = not prepack and any(f.role == "weights" for f in manifest.files)
        self._session = open_session(model_path, threads=threads, keep_weights_mapped=mapped)
        self._run = _direct_run(self._session)
        # The inputs a run needs, as the wrapper of onnxruntime's run looks for them: the
        # C++ run only fails once a node reads one that is missing (or, in a branch not
        # taken, never).
        self._required = [
            i.name for i in self._session.get_inputs() if not i.type.startswith("optional")
        ]
        outputs = self._session.get_outputs()
        self._output_names = [o.name for o in outputs]
        # Tensors come back from onnxruntime as arrays; other outputs (sequences, maps) not.
        self._tensors_only = all(o.type.startswith("tensor(") for o in outputs)
        # The input a 2-D array can go to unconverted: the only one, when it is numeric.
        self._direct: tuple[str, np.dtype[Any]] | None = None
        inputs = manifest.model.inputs
        if len(inputs) == 1 and inputs[0].dtype != "string":
            self._direct = (inputs[0].name, np.dtype(inputs[0].dtype))
        # Unknown (a bundle that does not say) is refused like False.
        self._refuse_missing = manifest.model.accepts_missing is not True
        # Whether an array for the direct input is looked at for NaN.
        self._direct_nan = (
            self._refuse_missing and self._direct is not None and self._direct[1].kind == "f"
        )
        self._flat = _flat_output(manifest)

    @classmethod
    def open(cls, directory: Path, *, threads: int = 0, prepack: bool = False) -> Model:
        """Open a bundle directory that has already been verified (installed models are).

        Raises:
            UsageError: the directory is not a bundle.
            TamperedError: the graph does not match the manifest (see :meth:`__init__`).
            IncompatibleModelError: the installed onnxruntime cannot run it.
        """
        try:
            data = (directory / MANIFEST).read_bytes()
        except OSError as e:
            raise UsageError(f"{directory} is not a bundle: {e.strerror}") from e
        manifest = parse_manifest(data)
        check_compatible(manifest)
        return cls(directory, manifest, threads=threads, prepack=prepack)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.model.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.model.outputs

    @property
    def predicted(self) -> tuple[TensorSpec, ...]:
        """The outputs as :meth:`predict` returns them: a regressor's one output of shape
        [N, 1] is its target (or "prediction"), of shape [N]."""
        if self._flat is None:
            return self.outputs
        (output,), (_, name) = self.outputs, self._flat
        return (TensorSpec(name, output.dtype, None if output.shape is None else output.shape[:1]),)

    def __repr__(self) -> str:
        return f"Model({self.manifest.ref})"

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        """Run the model.

        ``inputs`` may be: a mapping of ONNX input names to arrays; a mapping of
        column names to sequences (mapped to inputs as the sample was); a list of
        records (``{column: value}``); a list of rows (for a model of several inputs,
        the values in the order of :attr:`inputs`); a 2-D array (for a model with one
        input); a pandas DataFrame (when the caller uses pandas); or a
        :class:`packager._io.table.Table`.

        A missing value (NaN, None, empty text) is refused unless the manifest says the
        model takes them (``model.acceptsMissing``).

        Returns the outputs by name; a regressor's one output of one value per row is a
        flat array named by the manifest's ``model.target`` ("prediction" when it has none).

        Raises:
            UsageError: the inputs do not match the model's inputs, or hold a missing value
                the model does not take.
            IncompatibleModelError: onnxruntime failed.
        """
        return self.predict_feeds(self._direct_feeds(inputs) or self.feeds(inputs))

    def predict_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """:meth:`predict` on feeds :meth:`feeds` made (their values checked already).

        Raises:
            IncompatibleModelError: onnxruntime failed.
        """
        results = self.run(feeds)
        if self._flat is None:
            return results
        output, name = self._flat
        return {name: results[output].reshape(-1)}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on ready onnxruntime feeds (see :meth:`feeds`).

        Raises:
            IncompatibleModelError: onnxruntime rejected the feeds (a required input
                missing, say) or failed.
        """
        missing = [name for name in self._required if name not in feeds]
        if missing:
            raise IncompatibleModelError(
                f"onnxruntime failed to run the model: required inputs {missing} are missing "
                f"from the feeds ({list(feeds)})"
            )
        try:
            results = self._run(
                self._output_names, feeds if type(feeds) is dict else dict(feeds), None
            )
        except Exception as e:  # onnxruntime's own exception types are not importable stably
            raise IncompatibleModelError(f"onnxruntime failed to run the model: {e}") from e
        if self._tensors_only:
            return dict(zip(self._output_names, results, strict=True))
        return dict(zip(self._output_names, map(np.asarray, results), strict=True))

    def feeds(self, inputs: Any) -> dict[str, np.ndarray]:
        """Turn any accepted input form into onnxruntime feeds (see :meth:`predict`).

        Raises:
            UsageError: as :meth:`predict`.
        """
        feeds = self._direct_feeds(inputs)
        if feeds is not None:
            return feeds
        feeds, table = self._feeds(inputs)
        if self._refuse_missing:
            refuse_missing(feeds, table.columns if table is not None and table.named else None)
        return feeds

    def _direct_feeds(self, inputs: Any) -> dict[str, np.ndarray] | None:
        """The hot path: feeds for a 2-D array of the dtype of the model's one numeric
        input (alone, or as the one value of a dict by the input's name), which goes to
        onnxruntime unconverted; None for any other input."""
        direct = self._direct
        if direct is not None and type(inputs) is dict and len(inputs) == 1:
            inputs = inputs.get(direct[0])
        if (
            direct is None
            or type(inputs) is not np.ndarray
            or inputs.ndim != 2
            or inputs.dtype != direct[1]
        ):
            return None
        feeds = {direct[0]: inputs}
        if self._direct_nan and has_nan(inputs):
            refuse_missing(feeds)
        return feeds

    def _feeds(self, inputs: Any) -> tuple[dict[str, np.ndarray], Table | None]:
        """The feeds, and the table they were made from if there was one."""
        names = [spec.name for spec in self.inputs]
        if isinstance(inputs, Table):
            return to_feeds(inputs, self.inputs), inputs
        table = _as_table(inputs, multiple=len(self.inputs) > 1)
        if table is not None:
            return to_feeds(table, self.inputs), table
        if isinstance(inputs, Mapping):
            if set(inputs) == set(names) and all(
                _whole_tensor(inputs[spec.name], spec) for spec in self.inputs
            ):
                return {spec.name: _cast(inputs[spec.name], spec) for spec in self.inputs}, None
            table = from_mapping(inputs)
            return to_feeds(table, self.inputs), table
        if len(self.inputs) != 1:
            raise UsageError(
                f"the model has {len(names)} inputs ({', '.join(names)}); "
                "pass a mapping of input or column names to values"
            )
        array = np.asarray(inputs)
        if array.ndim == 1:
            array = array.reshape(1, -1)
        return {names[0]: _cast(array, self.inputs[0])}, None

    def smoke_test(self) -> Comparison:
        """Run the bundle's test vectors and compare within its recorded tolerance.

        Raises:
            SmokeTestError: outputs differ beyond tolerance, or vectors are unusable.
        """
        from packager._io.testvectors import read_testvectors

        inputs, expected = read_testvectors(self.directory / self.manifest.validation.testvectors)
        if set(inputs) != {spec.name for spec in self.inputs}:
            raise SmokeTestError(
                f"{self.manifest.ref}: test vectors do not match the model's inputs; "
                "re-package the model"
            )
        try:
            actual = self.run(inputs)
        except IncompatibleModelError as e:
            raise SmokeTestError(f"{self.manifest.ref}: test vectors failed to run: {e}") from e
        result = compare_outputs(
            actual,
            expected,
            rtol=self.manifest.validation.rtol,
            atol=self.manifest.validation.atol,
            label_outputs=self.manifest.validation.label_outputs or (),
        )
        if not result.ok:
            detail = "; ".join(result.worst[:3])
            raise SmokeTestError(
                f"{self.manifest.ref}: this instance's onnxruntime {runtime_version()} does not "
                f"reproduce the test vectors (max abs diff {result.max_abs_diff:.3g}): {detail}"
            )
        return result


# What a regressor's one output is called when the manifest does not name its target.
PREDICTION = "prediction"


def _flat_output(manifest: Manifest) -> tuple[str, str] | None:
    """(ONNX output, name) of a regressor's one output of shape [N, 1]; None otherwise."""
    outputs = manifest.model.outputs
    if manifest.validation.task != "regression" or len(outputs) != 1:
        return None
    shape = outputs[0].shape
    if shape is None or len(shape) != 2 or shape[1] != 1:
        return None
    return outputs[0].name, manifest.model.target or PREDICTION


def _as_table(inputs: Any, *, multiple: bool) -> Table | None:
    """A pandas DataFrame, a list of records, or (for a model of several inputs) a list of
    rows as a table; None for every other form.

    Raises:
        UsageError: records with different keys, or rows of different lengths.
    """
    # Only when the caller has imported pandas: the instance never imports it itself.
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(inputs, pandas.DataFrame):
        return from_mapping({str(c): inputs[c].to_numpy() for c in inputs.columns})
    if not isinstance(inputs, list | tuple) or not inputs:
        return None
    first = inputs[0]
    if isinstance(first, Mapping):
        keys = list(first)
        for i, record in enumerate(inputs):
            if not isinstance(record, Mapping) or set(record) != set(keys):
                raise UsageError(f"record {i} has other keys than record 0 ({', '.join(keys)})")
        return from_mapping({k: [record[k] for record in inputs] for k in keys})
    if multiple and isinstance(first, list | tuple):
        width = len(first)
        for i, row in enumerate(inputs):
            if not isinstance(row, list | tuple) or len(row) != width:
                raise UsageError(f"row {i} is not a list of {width} values like row 0")
        columns = {f"x{j}": [row[j] for row in inputs] for j in range(width)}
        return from_mapping(columns, named=False)
    return None


def _whole_tensor(value: Any, spec: TensorSpec) -> bool:
    """Whether a mapping's ``value`` is the tensor of input ``spec`` itself (an array of
    two dimensions or more, or of the rank the input has), not a column of a table."""
    if not isinstance(value, np.ndarray):
        return False
    return value.ndim >= 2 or (spec.shape is not None and value.ndim == len(spec.shape))


def _cast(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.dtype == "string":
        return _text(array, spec.name)
    try:
        return np.asarray(array, dtype=spec.dtype)
    except (TypeError, ValueError) as e:
        raise UsageError(f"input {spec.name!r} must be {spec.dtype}: {e}") from e


def _text(array: np.ndarray, name: str) -> np.ndarray:
    """A text input as onnxruntime takes it. An array of strings (objects) goes as it is:
    as numpy's own string array every element would take the room of the longest. In one
    of objects, None and NaN are missing values (empty: refused unless the model takes
    them), bytes are UTF-8 text, and numbers are written as text.

    Raises:
        UsageError: bytes that are not UTF-8.
    """
    if array.dtype.kind != "O":
        return np.asarray(array, dtype=str)
    if all(type(v) is str for v in array.flat):
        return array
    texts = np.empty(array.shape, dtype=object)
    for index, value in np.ndenumerate(array):
        if value is None or (isinstance(value, float) and value != value):
            value = ""
        elif isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"input {name!r}: a value is bytes that are not UTF-8") from None
        elif not isinstance(value, str):
            value = str(value)
        texts[index] = value
    return texts
