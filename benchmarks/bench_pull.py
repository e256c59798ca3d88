"""Target 3: `packager install` of a 1 GiB bundle from a local OCI registry against
`skopeo copy docker://... oci:DIR` of the same artifact.

    python benchmarks/bench_pull.py [--runs N] [--keep DIR]

docker-registry (CNCF distribution) serves on 127.0.0.1; the bundle is published to it
once. The install (every check, every layer downloaded and hashed as it arrives, fsync,
switch) must take <= 0.8 x skopeo's copy into a fresh OCI layout; the onnxruntime smoke
test is timed apart and left out. Each run starts from an empty PACKAGER_HOME and an
empty skopeo destination.
"""

from __future__ import annotations

import shutil
import statistics
import sys

from bench_install import install_runs
from harness import PACKAGER, Fixtures, Row, median, oci_registry, run, standalone


def rows(fx: Fixtures, runs: int) -> list[Row]:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise RuntimeError("skopeo is not installed: apt-get install skopeo")
    big = fx.big()
    with oci_registry(fx.root / "oci-registry") as host:
        registry = f"oci://{host}/bench"
        run([PACKAGER, "-q", "publish", big, "--registry", registry], env=fx.env())
        destination = fx.root / "skopeo-copy"
        copy = [skopeo, "copy", "--quiet", "--src-tls-verify=false"]
        copy += [f"docker://{host}/bench/big:1.0.0", f"oci:{destination}:1.0.0"]
        installs, smoke, copies = install_runs(
            fx,
            big,
            registry,
            ("skopeo", copy),
            runs,
            reset=lambda: shutil.rmtree(destination, ignore_errors=True),
        )
        shutil.rmtree(destination, ignore_errors=True)
    without_smoke = [s.seconds - t for s, t in zip(installs, smoke, strict=True)]
    return [
        Row(
            "3 OCI pull",
            "`packager install` 1 GiB from docker-registry, without the smoke test",
            statistics.median(without_smoke),
            0.8,
            median(copies),
            "`skopeo copy docker://… oci:DIR`",
            note=(
                f"smoke test a further {statistics.median(smoke):.2f} s (median); "
                f"whole install {median(installs):.2f} s"
            ),
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
