"""Target 2: `packager install` of a 1 GiB bundle from the embedded registry, end to end,
against `openssl dgst -sha256` of the same bytes.

    python benchmarks/bench_install.py [--runs N] [--keep DIR]

The install (resolve, signature, manifest, copy + hash of every file, fsync, switch,
audit) must take <= 1.5 x openssl over the bundle's files; the onnxruntime smoke test,
which runs in a child process, is timed apart (the install reports it) and left out of
that figure. Every run installs into an empty PACKAGER_HOME; the registry's blobs are in
the page cache.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

from harness import (
    PACKAGER,
    Fixtures,
    Row,
    Sample,
    bundle_files,
    interleave,
    median,
    run,
    standalone,
    warm,
)


def install_runs(
    fx: Fixtures,
    bundle: Path,
    registry: str,
    reference: tuple[str, list[str | Path]],
    runs: int,
    *,
    reset: Callable[[], None] | None = None,
) -> tuple[list[Sample], list[float], list[Sample]]:
    """Installs of ``bundle`` from ``registry`` alternating with ``reference`` (``reset``
    prepares each reference run); returns the install samples, their smoke-test seconds,
    and the reference samples."""
    home = fx.root / "install-home"
    name = bundle.name.rsplit("-", 1)[0]
    args: list[str | Path] = [PACKAGER, "-q", "install", f"{name}@1.0.0", "--json"]
    args += ["--registry", registry, "--key", fx.pub]

    def fresh(case: str) -> None:
        shutil.rmtree(home, ignore_errors=True)
        if case != "packager" and reset is not None:
            reset()

    samples = interleave(
        {
            "packager": lambda: run(args, env=fx.env(home)),
            reference[0]: lambda: run(reference[1], env=fx.env()),
        },
        runs=runs,
        before=fresh,
    )
    shutil.rmtree(home, ignore_errors=True)
    smoke = [float(json.loads(s.stdout)["smokeTestSeconds"]) for s in samples["packager"]]
    return samples["packager"], smoke, samples[reference[0]]


def rows(fx: Fixtures, runs: int) -> list[Row]:
    big = fx.big()
    registry = fx.layout(big)
    warm(registry)
    installs, smoke, openssl = install_runs(
        fx,
        big,
        str(registry),
        ("openssl", ["openssl", "dgst", "-sha256", *bundle_files(big)]),
        runs,
    )
    without_smoke = [s.seconds - t for s, t in zip(installs, smoke, strict=True)]
    return [
        Row(
            "2 install",
            "`packager install` 1 GiB, embedded registry, without the smoke test",
            statistics.median(without_smoke),
            1.5,
            median(openssl),
            "`openssl dgst -sha256` (all files)",
            note=(
                f"the onnxruntime smoke test (child process) took a further "
                f"{statistics.median(smoke):.2f} s (median); "
                f"whole install {median(installs):.2f} s"
            ),
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
