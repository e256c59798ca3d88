"""Target 5: start-up of `packager --help` and `packager list` against `python -c "import click"`.

    python benchmarks/bench_startup.py [--runs N]

Both must take <= 2 x the bare click import: the CLI imports click and its own small
modules only (no onnxruntime, numpy, scikit-learn, jsonschema-rs, cryptography or the HTTP client:
``python -X importtime -m packager list`` shows what is imported). ``list`` runs against
an empty PACKAGER_HOME. Bytecode caches are on, as an installed packager has them.
"""

from __future__ import annotations

import subprocess
import sys

from harness import PACKAGER, Fixtures, Row, interleave, median, run, standalone

# Modules that must not be imported to start the CLI.
HEAVY = ("onnxruntime", "numpy", "sklearn", "onnx", "torch", "jsonschema_rs", "cryptography")


def imported(args: list[str], env: dict[str, str]) -> set[str]:
    """Top-level packages the CLI imports for ``args`` (from -X importtime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "packager", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def rows(fx: Fixtures, runs: int) -> list[Row]:
    env = fx.env(fx.root / "empty-home")
    runs = max(runs, 20)  # tens of milliseconds each: more runs for a steady median
    samples = interleave(
        {
            "click": lambda: run([sys.executable, "-c", "import click"], env=env),
            "help": lambda: run([PACKAGER, "--help"], env=env),
            "list": lambda: run([PACKAGER, "list"], env=env),
        },
        runs=runs,
        warmup=2,
    )
    click = median(samples["click"])
    result = []
    for command in ("help", "list"):
        args = ["--help"] if command == "help" else ["list"]
        heavy = sorted(imported(args, env) & set(HEAVY))
        result.append(
            Row(
                "5 start-up",
                f"`packager {' '.join(args)}`",
                median(samples[command]),
                2.0,
                click,
                '`python -c "import click"`',
                problem=f"imports {', '.join(heavy)} at start" if heavy else "",
            )
        )
    return result


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
