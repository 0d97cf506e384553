"""The package layers hold: ``lint-imports`` with the contracts in ``pyproject.toml``;
and test modules import helpers from ``tests/support/``, never another test module."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs lint-imports and Python in subprocesses

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def test_import_contracts_are_kept() -> None:
    linter = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def imported_test_modules(source: str) -> list[str]:
    """The modules named ``tests.test_*`` that ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "tests":
                names = [f"tests.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [n for n in names if n.startswith("tests.test_")]
    return found


def test_the_check_sees_each_form_of_import() -> None:
    source = "import tests.test_a\nfrom tests.test_b import x\nfrom tests import test_c\n"
    assert imported_test_modules(source) == ["tests.test_a", "tests.test_b", "tests.test_c"]
    assert imported_test_modules("from tests.support.fakes import FakeEngine\n") == []


def importing_test_modules() -> dict[str, list[str]]:
    """Each test or support module that imports a test module, with what it imports."""
    return {
        path.relative_to(ROOT).as_posix(): modules
        for path in sorted([*TESTS.glob("test_*.py"), *TESTS.glob("support/*.py")])
        if (modules := imported_test_modules(path.read_text()))
    }


def test_no_test_module_imports_another() -> None:
    # The scan runs in a fresh interpreter: CPython 3.11.7's ast.parse can raise
    # "SystemError: AST constructor recursion depth mismatch" deep inside a long pytest
    # session (fixed in 3.11.8), which would make this check flaky.
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_import_layers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    offenders = json.loads(result.stdout)
    assert not offenders, f"move what they share into tests/support/: {offenders}"


if __name__ == "__main__":
    print(json.dumps(importing_test_modules()))
