"""Target 6: `packager.load(name).predict` on one row against a raw
`onnxruntime.InferenceSession.run` of the same model file; and load time.

    python benchmarks/bench_runtime.py [--runs N] [--keep DIR]

The model is a scikit-learn pipeline (StandardScaler + LogisticRegression on iris),
installed as ``iris``; the row is a float32 array of shape (1, 4), given to both as it
is. Each figure is the best of several timeit repeats (the usual way to time code this
short), and the median of ``runs`` such figures, the two alternating. predict must take
<= 1.2 x the raw run. Load time is measured in a fresh process: the first
``packager.load`` there includes importing onnxruntime.

The 1 GiB model (y = x @ W, W held as external data) is loaded as ``packager.load``
loads it, weights mapped from their file (no prepacking, no constant folding: target 4's
memory), and, as the reference, by an ``InferenceSession`` with onnxruntime's defaults;
each in a process of its own, the two alternating, each figure the median of 15 calls
after one unmeasured. predict of one row must take <= 1.05 x the reference's. The note
gives 16 rows too, and ``packager.load(..., prepack=True)``.
"""

from __future__ import annotations

import json
import statistics
import sys
import textwrap

from harness import WIDTH, Fixtures, Row, run, standalone

CHILD = textwrap.dedent(
    """
    import json, statistics, sys, time, timeit
    from pathlib import Path

    start = time.perf_counter()
    import packager

    model = packager.load("iris", home=Path(sys.argv[1]))
    first = time.perf_counter() - start
    start = time.perf_counter()
    model = packager.load("iris", home=Path(sys.argv[1]))
    again = time.perf_counter() - start

    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(model.directory / model.manifest.model.path), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    row = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    cases = {
        "raw": lambda: session.run(None, {name: row}),
        "predict": lambda: model.predict(row),
    }
    best = {case: [] for case in cases}
    for _ in range(int(sys.argv[2])):
        for case, call in cases.items():
            best[case].append(min(timeit.repeat(call, number=2000, repeat=5)) / 2000)
    print(json.dumps({
        "first": first, "again": again,
        **{case: statistics.median(times) for case, times in best.items()},
    }))
    """
)


# In a fresh process: open the 1 GiB bundle as packager.load does (argv[2] "mapped" or
# "prepacked") or as a default InferenceSession ("defaults"); per number of rows, the
# median of 15 calls after one.
BIG = textwrap.dedent(
    """
    import json, statistics, sys, time
    from pathlib import Path

    import numpy as np
    import onnxruntime
    from packager.runtime import Model

    bundle, how, width = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if how == "defaults":
        session = onnxruntime.InferenceSession(
            str(bundle / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        call = lambda x: session.run(None, {name: x})
    else:
        call = Model.open(bundle, prepack=how == "prepacked").predict
    found = {}
    for rows in (1, 16):
        x = np.random.default_rng(rows).random((rows, width), dtype=np.float32)
        call(x)
        times = []
        for _ in range(15):
            start = time.perf_counter()
            call(x)
            times.append(time.perf_counter() - start)
        found[rows] = statistics.median(times)
    print(json.dumps(found))
    """
)
BIG_LIMIT = 1.05


def rows(fx: Fixtures, runs: int) -> list[Row]:
    return [_iris(fx, runs), _big(fx, runs)]


def _big(fx: Fixtures, runs: int) -> Row:
    bundle = fx.big()
    found: dict[str, list[dict[str, float]]] = {"mapped": [], "defaults": [], "prepacked": []}
    for _ in range(max(runs, 3)):
        for how, figures in found.items():
            command = [sys.executable, "-c", BIG, bundle, how, str(WIDTH)]
            figures.append(json.loads(run(command, env=fx.env(fx.root / "big-home")).stdout))

    def median(how: str, rows: int) -> float:
        return statistics.median(f[str(rows)] for f in found[how])

    ms = {(how, n): median(how, n) * 1000 for how in found for n in (1, 16)}
    return Row(
        "6 runtime",
        "`packager.load(...).predict`, one row, 1 GiB model (weights mapped)",
        median("mapped", 1),
        BIG_LIMIT,
        median("defaults", 1),
        "`InferenceSession` with onnxruntime's defaults",
        note=(
            f"16 rows: {ms['mapped', 16]:.0f} ms mapped, {ms['defaults', 16]:.0f} ms with "
            f"onnxruntime's defaults, {ms['prepacked', 16]:.0f} ms with `prepack=True`; "
            f"one row with `prepack=True`: {ms['prepacked', 1]:.0f} ms"
        ),
    )


def _iris(fx: Fixtures, runs: int) -> Row:
    home = fx.iris()
    # The first run fills the bytecode cache: loading is measured with it, as installed.
    command = [sys.executable, "-c", CHILD, home, str(max(runs, 5))]
    found = [json.loads(run(command, env=fx.env(home)).stdout) for _ in range(2)][-1]
    return Row(
        "6 runtime",
        '`packager.load("iris").predict(row)`',
        found["predict"],
        1.2,
        found["raw"],
        "`InferenceSession.run`",
        unit="us",
        note=(
            f"packager.load: {found['first'] * 1000:.0f} ms in a fresh process "
            f"(importing onnxruntime included), {found['again'] * 1000:.0f} ms again"
        ),
    )


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
