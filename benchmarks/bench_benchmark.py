"""Target 7: what `packager benchmark` adds to the model runs it times.

    python benchmarks/bench_benchmark.py [--runs N] [--keep DIR]

The installed iris pipeline is benchmarked on 150 labelled rows (one-row and batch
latency, quality, memory, the machine), in a fresh process each run, the second of two
benchmarks there (the first imports onnxruntime and jsonschema-rs: a cost of the process,
not of the benchmark). The figure is the wall time of the whole benchmark (reading the
manifest, loading the model, the warm-ups, the timing loops, the metrics); the
reference is the time spent inside the model's own ``run`` calls in that same
benchmark, measured by wrapping them. The benchmark must take <= 2 x the model runs it
makes. A model this small (some 50 us a call) is the worst case: fixed costs weigh
least beside slower models.
"""

from __future__ import annotations

import json
import statistics
import sys
import textwrap

from harness import Fixtures, Row, run, standalone

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import numpy as np
    from sklearn.datasets import load_iris

    from packager._io.table import from_mapping
    from packager.build.benchmark import benchmark_reference
    from packager.build.options import Settings
    from packager.instance.models import model_path
    from packager.runtime import Model

    inside = 0.0
    original = Model.run

    def timed(self, feeds):
        global inside
        start = time.perf_counter()
        try:
            return original(self, feeds)
        finally:
            inside += time.perf_counter() - start

    Model.run = timed
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    columns = {f"x{i}": x[:, i] for i in range(4)}
    data = from_mapping({**columns, "species": names[y]}, named=False)
    path = model_path("iris", home=Path(sys.argv[1]))
    settings = Settings(budget_seconds=0.5)
    # A first benchmark imports what the process needs once (onnxruntime, jsonschema-rs).
    benchmark_reference(str(path), data, target="species", settings=settings)
    inside = 0.0
    start = time.perf_counter()
    benchmark_reference(str(path), data, target="species", settings=settings)
    print(json.dumps({"total": time.perf_counter() - start, "inside": inside}))
    """
)


def rows(fx: Fixtures, runs: int) -> list[Row]:
    home = fx.iris()
    command = [sys.executable, "-c", CHILD, home]
    found = [json.loads(run(command, env=fx.env(home)).stdout) for _ in range(max(runs, 3))]
    total = statistics.median(f["total"] for f in found)
    inside = statistics.median(f["inside"] for f in found)
    return [
        Row(
            "8 benchmark",
            "`packager benchmark iris` on 150 rows (whole run)",
            total,
            2.0,
            inside,
            "time inside the model's runs",
        )
    ]


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
