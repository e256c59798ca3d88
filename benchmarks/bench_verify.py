"""Target 1: `packager verify` against `model_signing verify key` and `openssl dgst -sha256`.

    python benchmarks/bench_verify.py [--runs N] [--keep DIR]

One 1 GiB weights file: packager <= 0.75 x model_signing, <= 1.15 x openssl over the
same bytes (signed by whole files, as bundles up to 1 GiB are: SHA-256 of one stream runs
on one core, and openssl is the floor). Eight files of 128 MiB: packager <= 0.6 x
openssl over all of them (files hashed on every core). One 4 GiB weights file, signed by
256 MiB shards as `packager package` signs files over 1 GiB: packager <= 0.6 x openssl
over the same bytes on 2 cores (the shards are hashed on every core; 0.3 x on 4).
Warm page cache.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from harness import (
    PACKAGER,
    Fixtures,
    Row,
    bundle_files,
    interleave,
    median,
    run,
    standalone,
    warm,
)


def rows(fx: Fixtures, runs: int) -> list[Row]:
    model_signing = shutil.which("model_signing", path=str(Path(sys.executable).parent))
    if model_signing is None:
        raise RuntimeError("model_signing is not installed: pip install model-signing pyOpenSSL")
    big, eight, big4 = fx.big(), fx.eight(), fx.big4()
    warm(big, eight)
    env = fx.env()

    def verify(bundle: Path) -> list[str | Path]:
        return [PACKAGER, "verify", bundle, "--key", fx.pub]

    oracle = [model_signing, "verify", "key", big, "--signature", big / "model.sig"]
    oracle += ["--public_key", fx.pub]
    one = interleave(
        {
            "packager": lambda: run(verify(big), env=env),
            "model_signing": lambda: run(oracle, env=env),
            "openssl": lambda: run(["openssl", "dgst", "-sha256", *bundle_files(big)], env=env),
        },
        runs=runs,
    )
    many = interleave(
        {
            "packager": lambda: run(verify(eight), env=env),
            "openssl": lambda: run(["openssl", "dgst", "-sha256", *bundle_files(eight)], env=env),
        },
        runs=runs,
    )
    warm(big4)
    sharded = interleave(
        {
            "packager": lambda: run(verify(big4), env=env),
            "openssl": lambda: run(["openssl", "dgst", "-sha256", *bundle_files(big4)], env=env),
        },
        runs=runs,
    )
    cores = len(os.sched_getaffinity(0))
    ours = median(one["packager"])
    return [
        Row(
            "1 verify",
            "`packager verify` 1 GiB (1 weights file)",
            ours,
            0.75,
            median(one["model_signing"]),
            "`model_signing verify key`",
        ),
        Row(
            "1 verify",
            "`packager verify` 1 GiB (1 weights file)",
            ours,
            1.15,
            median(one["openssl"]),
            "`openssl dgst -sha256` (all files)",
        ),
        Row(
            "1 verify",
            "`packager verify` 8 x 128 MiB",
            median(many["packager"]),
            0.6,
            median(many["openssl"]),
            "`openssl dgst -sha256` (all files)",
        ),
        Row(
            "1 verify",
            f"`packager verify` 4 GiB (1 weights file, 256 MiB shards, {cores} cores)",
            median(sharded["packager"]),
            0.3 if cores >= 4 else 0.6,
            median(sharded["openssl"]),
            "`openssl dgst -sha256` (all files)",
        ),
    ]


if __name__ == "__main__":
    sys.exit(standalone(__doc__ or "", rows))
