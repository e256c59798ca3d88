"""Target 4: peak resident memory of verify, publish and install, for 1 GiB and 4 GiB.

    python benchmarks/bench_memory.py [--runs N] [--keep DIR]

Each must stay <= 150 MB (MiB here) and must not grow with the bundle's size: the 4 GiB
figure may exceed the 1 GiB one by at most 8 MiB. The figure is the CLI process's own
peak (see rss.py): the install's onnxruntime smoke test loads the whole model, so it
runs in a child process whose peak is reported apart.

Loading the model, in the install's smoke test and in ``packager.load`` followed by one
prediction (which reads every weight), must peak at <= 1.2 x the size of the weights. The
note gives, beside it, the peak of an ``InferenceSession`` with onnxruntime's defaults
(prepacking and constant folding on) doing the same.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from harness import MIB, WIDTH, Fixtures, Row, Sample, packager_self_rss, run, standalone

LIMIT = 150 * MIB
GROWTH = 8 * MIB
# A loaded model against the size of its weights.
LOADED = 1.2
# In a fresh process: load the installed model, predict one row, report the peak.
LOAD = """
import json, sys
from pathlib import Path
import numpy as np
import packager
model = packager.load(sys.argv[1], home=Path(sys.argv[2]))
model.predict(np.ones((1, int(sys.argv[3])), dtype=np.float32))
status = Path("/proc/self/status").read_text().splitlines()
print(json.dumps({"peakRss": next(
    int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))}))
"""
# The same with a default InferenceSession of the installed model file.
DEFAULTS = LOAD.replace(
    "model = packager.load(sys.argv[1], home=Path(sys.argv[2]))\n"
    "model.predict(np.ones((1, int(sys.argv[3])), dtype=np.float32))",
    "import onnxruntime\n"
    "directory = Path(sys.argv[2], 'models', sys.argv[1], 'current')\n"
    "session = onnxruntime.InferenceSession(str(directory / 'model.onnx'))\n"
    "x = np.ones((1, int(sys.argv[3])), dtype=np.float32)\n"
    "session.run(None, {session.get_inputs()[0].name: x})",
)


def rows(fx: Fixtures, runs: int) -> list[Row]:
    sizes = {"1 GiB": fx.big(), "4 GiB": fx.big4()}
    registries = {label: fx.layout(bundle) for label, bundle in sizes.items()}
    scratch = fx.root / "memory"
    peaks: dict[tuple[str, str], int] = {}
    smoke: dict[str, int] = {}
    loaded: dict[str, int] = {}
    defaults: dict[str, int] = {}
    weights: dict[str, int] = {}
    for label, bundle in sizes.items():
        name = bundle.name.rsplit("-", 1)[0]
        commands: dict[str, list[str | Path]] = {
            "verify": ["verify", bundle, "--key", fx.pub],
            "publish": ["-q", "publish", bundle, "--registry", scratch / "registry"],
            "install": [
                "-q", "install", f"{name}@1.0.0", "--json", "--registry", registries[label],
                "--key", fx.pub,
            ],
        }  # fmt: skip
        for command, args in commands.items():
            samples: list[Sample] = []
            for _ in range(max(1, min(runs, 2))):
                shutil.rmtree(scratch, ignore_errors=True)
                samples.append(packager_self_rss(args, env=fx.env(scratch / "home")))
            peaks[command, label] = max(s.peak_rss for s in samples)
            if command == "install":
                smoke[label] = max(int(json.loads(s.stdout)["smokeTestPeakRss"]) for s in samples)
        # The install just made is still there: load it in a process of its own.
        for child, found in ((LOAD, loaded), (DEFAULTS, defaults)):
            load = [sys.executable, "-c", child, name, scratch / "home", str(WIDTH)]
            output = run(load, env=fx.env(scratch / "home")).stdout
            found[label] = int(json.loads(output)["peakRss"])
        weights[label] = sum(p.stat().st_size for p in bundle.glob("*.data"))
        shutil.rmtree(scratch, ignore_errors=True)
    result = []
    for command in ("verify", "publish", "install"):
        small, large = peaks[command, "1 GiB"], peaks[command, "4 GiB"]
        for label, value in (("1 GiB", small), ("4 GiB", large)):
            note = ""
            if label == "4 GiB":
                note = f"{command}: {(large - small) / MIB:+.1f} MiB from 1 GiB to 4 GiB"
                if command == "install":
                    note += (
                        f"; smoke-test child peaks {smoke['1 GiB'] / MIB:.0f} MiB (1 GiB) and "
                        f"{smoke['4 GiB'] / MIB:.0f} MiB (4 GiB), reported apart"
                    )
            result.append(
                Row(
                    "4 memory",
                    f"`packager {command}` {label}, peak RSS",
                    value,
                    LIMIT if label == "1 GiB" else min(LIMIT, small + GROWTH),
                    unit="bytes",
                    note=note,
                )
            )
    for label in sizes:
        before = (
            f"with onnxruntime's defaults (prepacking, constant folding): "
            f"{defaults[label] / MIB:.0f} MiB, {defaults[label] / weights[label]:.2f} x"
        )
        for what, peak, note in (
            ("the install's smoke test (child process)", smoke[label], ""),
            ("`packager.load` + one `predict`", loaded[label], before),
        ):
            result.append(
                Row(
                    "4 memory",
                    f"{what}, {label} model, peak RSS",
                    peak,
                    LOADED,
                    reference=weights[label],
                    reference_what="the size of its weights",
                    unit="bytes",
                    note=note,
                )
            )
    return result


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
