"""Build one archive that installs packager on an instance with no network at all.

    python tools/offline_installer.py [--python-version 3.11] [--platform manylinux_2_28_x86_64]
        [-o dist]

The archive, ``<out>/onnx-packager-offline-<version>-py<pyver>-<platform>.tar.gz``, holds the
wheel of this source tree without extras (the instance side), a wheel of every runtime
dependency for the target Python and platform (``pip download --only-binary=:all:``, pinned by
constraints.txt), a ``requirements.txt`` pinning each wheel by its SHA-256, and
``install.sh``, which creates a virtual environment and installs from those wheels alone
(``pip install --no-index --find-links … --require-hashes``). Without --python-version and
--platform the target is this machine. Building needs the network (an index); installing
does not. Standard library only: this script must not depend on packager itself.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "onnx-packager"
# name-version(-build)?-python-abi-platform.whl (PEP 427); names and versions hold no "-".
WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
# manylinux_2_<glibc minor>_<arch>, or a PEP 513/571/599 name standing for one.
MANYLINUX = re.compile(
    r"^(?:manylinux_2_(?P<minor>\d+)|(?P<legacy>manylinux\w+?))_(?P<arch>x86_64|i686|aarch64|ppc64le|s390x|armv7l)$"
)
LEGACY = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}

INSTALL_SH = """\
#!/bin/sh
# Installs {distribution} {version} (the instance side, no extras) for Python {pyver} on
# {platform}, from the wheels beside this script alone: no index, no network.
#   sh install.sh [VENV]        VENV defaults to /opt/packager; an existing one is upgraded.
# Then: VENV/bin/packager --help (or put VENV/bin on PATH).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${{1:-/opt/packager}}
python=${{PYTHON:-python3}}
have=$("$python" -c 'import sys; print(*sys.version_info[:2], sep=".")') || {{
    echo "install.sh: cannot run $python; set PYTHON=python{pyver}" >&2; exit 2; }}
if [ "$have" != "{pyver}" ]; then
    echo "install.sh: these wheels are for Python {pyver}, $python is $have;" \\
        "set PYTHON=python{pyver}" >&2
    exit 2
fi
created=
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
    created=1
fi
# The site's pip configuration (indexes, find-links, constraints) has no say: only these wheels.
if ! PIP_CONFIG_FILE=/dev/null "$venv/bin/python" -m pip --isolated install --quiet \\
    --disable-pip-version-check --no-index --find-links "$here/wheels" \\
    --require-hashes --requirement "$here/requirements.txt"; then
    [ -n "$created" ] && rm -rf "$venv"
    echo "install.sh: installing into $venv failed (nothing was changed)" >&2
    exit 1
fi
echo "installed {distribution} {version}: $venv/bin/packager"
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pyver = args.python_version or "{}.{}".format(*sys.version_info[:2])
    platform = "+".join(args.platform) if args.platform else _this_platform()
    with tempfile.TemporaryDirectory(prefix="offline-installer-") as tmp:
        wheels = Path(tmp) / "wheels"
        own = _build_wheel(Path(tmp), wheels)
        version = _parse_wheel_name(own.name)[1]
        _download(own, wheels, pyver=pyver, platforms=args.platform, constraints=args.constraints)
        stem = f"{DISTRIBUTION}-offline-{version}-py{pyver}-{platform}"
        info = {"version": version, "pyver": pyver, "platform": platform}
        archive = _write_archive(wheels, args.out / f"{stem}.tar.gz", stem=stem, info=info)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    print(f"{archive}\nsha256 {digest}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python-version", default="", help="e.g. 3.11; default: this Python")
    parser.add_argument(
        "--platform",
        action="append",
        default=[],
        help="a wheel platform tag, e.g. manylinux_2_28_x86_64; repeat for several "
        "(pip takes a wheel for any of them); default: this machine",
    )
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "dist")
    return parser


def _this_platform() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", sysconfig.get_platform())


def _run(command: list[str], *, hint: str = "") -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"{result.stderr}offline-installer: {' '.join(command[:5])} … failed{hint}"
        )


def _build_wheel(tmp: Path, wheels: Path) -> Path:
    """The wheel of this source tree, built from a copy so that no build output lands in it."""
    src = tmp / "src"
    shutil.copytree(
        ROOT / "packager", src / "packager", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(src)]
    )
    (own,) = wheels.glob("*.whl")
    return own


def _download(
    own: Path, wheels: Path, *, pyver: str, platforms: list[str], constraints: Path
) -> None:
    """Every runtime dependency of ``own`` (no extras) as wheels for the target."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
    command += ["--dest", str(wheels), "--python-version", pyver, "--implementation", "cp"]
    for platform in platforms:
        for tag in _compatible(platform):
            command += ["--platform", tag]
    if constraints.is_file():
        command += ["--constraint", str(constraints)]
    _run(
        [*command, str(own)],
        hint=": a dependency has no wheel for this target (above); a newer platform tag "
        "(e.g. manylinux_2_28_x86_64) or another Python version may have one",
    )


def _compatible(platform: str) -> list[str]:
    """A manylinux tag and every older one its glibc also runs (pip only expands the tags of
    the machine it runs on): manylinux_2_28_x86_64 takes a manylinux2014 wheel too."""
    match = MANYLINUX.match(platform)
    if match is None:
        return [platform]
    arch = match["arch"]
    glibc = LEGACY.get(match["legacy"]) if match["legacy"] else int(match["minor"])
    if glibc is None:
        return [platform]
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
    tags += [f"{name}_{arch}" for name, minor in LEGACY.items() if minor <= glibc]
    return tags


def _parse_wheel_name(filename: str) -> tuple[str, str]:
    match = WHEEL_NAME.match(filename)
    if match is None:
        raise SystemExit(f"offline-installer: not a wheel file name: {filename}")
    return match["name"], match["version"]


def _requirements(wheels: Path) -> str:
    """One pinned line per project, with the SHA-256 of each of its wheels."""
    hashes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for wheel in sorted(wheels.glob("*.whl")):
        hashes[_parse_wheel_name(wheel.name)].append(hashlib.sha256(wheel.read_bytes()).hexdigest())
    versions: dict[str, set[str]] = defaultdict(set)
    for name, version in hashes:
        versions[name.lower()].add(version)
    clashing = sorted(name for name, found in versions.items() if len(found) > 1)
    if clashing:
        raise SystemExit(f"offline-installer: several versions of {', '.join(clashing)}")
    return "".join(
        f"{name}=={version}" + "".join(f" --hash=sha256:{h}" for h in digests) + "\n"
        for (name, version), digests in sorted(hashes.items())
    )


def _write_archive(wheels: Path, archive: Path, *, stem: str, info: dict[str, str]) -> Path:
    """Write the archive through a temporary file and a rename: never half an archive."""
    staging = wheels.parent
    script = staging / "install.sh"
    script.write_text(INSTALL_SH.format(distribution=DISTRIBUTION, **info), encoding="utf-8")
    script.chmod(0o755)
    (staging / "requirements.txt").write_text(_requirements(wheels), encoding="utf-8")
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for name in ("install.sh", "requirements.txt", "wheels"):
            tar.add(staging / name, arcname=f"{stem}/{name}", filter=_anonymous)
    partial.replace(archive)
    return archive


def _anonymous(entry: tarfile.TarInfo) -> tarfile.TarInfo:
    """No build machine's users or clock in the archive."""
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    entry.mtime = 0
    return entry


if __name__ == "__main__":
    sys.exit(main())
