"""What the import contracts cannot see: packager/core reaches no file and no module by name.

`make lint` runs import-linter over every import statement ([tool.importlinter] in
pyproject.toml): core imports no filesystem, network, database, thread or terminal module.
A builtin needs no import, and a module named in a string is imported without an import
statement, so those calls are refused here, on the syntax tree of every module of core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "packager" / "core"

# Builtins that read files or run code from strings; `compile` only as a bare name, since
# re.compile is pure.
FORBIDDEN_BUILTINS = {"open", "exec", "eval", "compile", "__import__", "input", "breakpoint"}
# Called as attributes: Path.open, os.open, tarfile.open, importlib.import_module, ...
FORBIDDEN_METHODS = {"open", "import_module", "__import__"}


def forbidden_calls(source: str) -> list[str]:
    """'name (line N)' for every call in source that core must not make."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
            found.append(f"{func.id} (line {node.lineno})")
        elif isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_METHODS:
            found.append(f".{func.attr} (line {node.lineno})")
    return found


@pytest.mark.parametrize(
    "module", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE))
)
def test_core_opens_no_file_and_imports_nothing_by_name(module: Path) -> None:
    assert forbidden_calls(module.read_text()) == [], module.relative_to(CORE.parent)


def test_core_modules_are_found() -> None:
    assert {"verify.py", "manifest.py", "signature.py"} <= {p.name for p in CORE.rglob("*.py")}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(p):\n    return open(p).read()\n", ["open (line 2)"]),
        ("import importlib\nm = importlib.import_module('sqlite3')\n", [".import_module (line 2)"]),
        ("def f(p):\n    with p.open('rb') as f:\n        return f.read()\n", [".open (line 2)"]),
        ("x = __import__('socket')\n", ["__import__ (line 1)"]),
        ("exec('import shutil')\n", ["exec (line 1)"]),
        ("import re\nPATTERN = re.compile('[a-z]+')\n", []),
    ],
)
def test_the_check_finds_what_it_refuses(source: str, expected: list[str]) -> None:
    assert forbidden_calls(source) == expected
