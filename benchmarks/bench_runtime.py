"""Target 6: `packager.load(name).predict` on one row against a raw
`onnxruntime.InferenceSession.run` of the same model file; and load time.

    python benchmarks/bench_runtime.py [--runs N] [--keep DIR]

The model is a scikit-learn pipeline (StandardScaler + LogisticRegression on iris),
installed as ``iris``; the row is a float32 array of shape (1, 4), given to both as it
is. Each figure is the best of several timeit repeats (the usual way to time code this
short), and the median of ``runs`` such figures, the two alternating. predict must take
<= 1.2 x the raw run. Load time is measured in a fresh process: the first
``packager.load`` there includes importing onnxruntime.
"""

from __future__ import annotations

import json
import sys
import textwrap

from harness import Fixtures, Row, run, standalone

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


def rows(fx: Fixtures, runs: int) -> list[Row]:
    home = fx.iris()
    # The first run fills the bytecode cache: loading is measured with it, as installed.
    command = [sys.executable, "-c", CHILD, home, str(max(runs, 5))]
    found = [json.loads(run(command, env=fx.env(home)).stdout) for _ in range(2)][-1]
    return [
        Row(
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
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
