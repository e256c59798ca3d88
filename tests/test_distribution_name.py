"""The name on PyPI: `packager` there is an unrelated project, so every install line says
`onnx-packager`, while the import package and the command stay `packager`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packager.build.convert import install_hint
from packager.build.convert.base import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_hints_name_the_distribution_of_pyproject() -> None:
    assert PYPROJECT["project"]["name"] == DISTRIBUTION == "onnx-packager"
    assert install_hint("sklearn") == "pip install 'onnx-packager[sklearn]'"
    assert PYPROJECT["project"]["scripts"] == {"packager": "packager.cli:run"}


def test_extras_refer_to_the_project_by_its_own_name() -> None:
    """An extra naming `packager[...]` would pull the unrelated project from PyPI."""
    references = [
        requirement
        for extra in PYPROJECT["project"]["optional-dependencies"].values()
        for requirement in extra
        if "[" in requirement and "packager" in requirement.split("[")[0]
    ]
    assert references
    assert all(r.startswith(f"{DISTRIBUTION}[") for r in references), references


def test_no_install_line_names_the_unrelated_project() -> None:
    pattern = re.compile(r"pip install '?packager\b")
    for path in [ROOT / "README.md", *sorted((ROOT / "packager").rglob("*.py"))]:
        assert not pattern.search(path.read_text(encoding="utf-8")), path
