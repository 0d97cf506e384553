"""The built wheel carries the three top-level packages the product card names
(``gateway``, ``adapters``, ``retrieval``) and nothing else at the top (no ``loadtests``,
no ``tests``: the load tests run from a checkout), with the non-Python files the
installed package needs: the playground's and the console's static files, the demo's
knowledge base, the persona datasets (package-data in ``pyproject.toml``).

The wheel is built from a copy of the source tree (so a build never races another in
the checkout) with the installed setuptools and no network: about 10 s.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # builds the wheel in a subprocess

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("gateway", "adapters", "retrieval")
SOURCE = (*SHIPPED, "loadtests", "tests")
"""What the copy of the checkout holds: the wheel must leave the last two out."""
SKIP = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache"
)


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for package in SOURCE:
        shutil.copytree(REPO / package, source / package, ignore=SKIP)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*command, "--no-index", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("loragate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def files_under(folder: str, pattern: str) -> list[str]:
    return sorted(p.relative_to(REPO).as_posix() for p in (REPO / folder).glob(pattern))


@pytest.mark.parametrize(
    ("folder", "pattern"),
    [
        ("gateway/playground/static", "*"),
        ("gateway/console/static", "*"),
        ("gateway/demo/kb", "**/*.md"),
        ("gateway/demo/eval", "*"),
        ("adapters/tooling/data", "*.jsonl"),
    ],
)
def test_the_wheel_carries_the_package_data(
    wheel_names: set[str], folder: str, pattern: str
) -> None:
    expected = [name for name in files_under(folder, pattern) if not name.endswith("/")]
    assert expected, f"nothing under {folder} to check"
    missing = [name for name in expected if name not in wheel_names]
    assert not missing, f"not in the wheel: {missing}"


def test_the_wheel_has_the_modules_and_only_the_three_packages(wheel_names: set[str]) -> None:
    for module in (
        "gateway/playground/routes.py",
        "gateway/demo/runner.py",
        "gateway/settings/settings.py",
        "gateway/model_io/prompt_renderer.py",
        "gateway/cli/main.py",
        "gateway/cli/__main__.py",
        "adapters/common/pg_connection.py",
        "adapters/tooling/demo_kit.py",
        "retrieval/store.py",
    ):
        assert module in wheel_names, module
    top = {name.split("/")[0] for name in wheel_names if ".dist-info/" not in name}
    assert top == set(SHIPPED)
