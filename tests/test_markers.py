"""Every test carries one tier marker (``tests/conftest.py``): ``system`` for a real
engine, replica, gateway process or browser, ``integration`` for a Redis, PostgreSQL,
S3 or other subprocess server, a process of its own or a real model, ``unit`` for the
rest; ``make test-fast`` runs ``-m unit``. A unit test that starts a process fails, and
``-m unit`` does not import modules whose ``pytestmark`` leaves no unit test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import UnitTestStartedProcessError, not_unit_module

REPO = Path(__file__).resolve().parents[1]
SYSTEM_MODULE = "tests/test_remote_engine_integration.py"  # real replicas and a gateway
INTEGRATION_MODULE = "tests/test_budget_shared.py"  # Redis and PostgreSQL servers
UNIT_MODULE = "tests/test_wire_enums.py"  # plain objects


class Tiers:
    """A plugin recording the tier markers of each collected test."""

    def __init__(self) -> None:
        self.modules: dict[str, set[str]] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            tiers = {t for t in ("unit", "integration", "system") if item.get_closest_marker(t)}
            self.modules.setdefault(item.nodeid.split("::")[0], set()).update(tiers)


@pytest.fixture(scope="module")
def tiers() -> dict[str, set[str]]:
    """The tiers of the three modules' tests, collected in this process (no subprocess)."""
    recorder = Tiers()
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO)]
    code = pytest.main(
        [*args, *(str(REPO / m) for m in (SYSTEM_MODULE, INTEGRATION_MODULE, UNIT_MODULE))],
        plugins=[recorder],
    )
    assert code == 0
    return recorder.modules


def test_this_pure_test_is_unit(request: pytest.FixtureRequest) -> None:
    tiers = [t for t in ("unit", "integration", "system") if request.node.get_closest_marker(t)]
    assert tiers == ["unit"]


@pytest.mark.parametrize(
    ("marker", "module"),
    [("system", SYSTEM_MODULE), ("integration", INTEGRATION_MODULE), ("unit", UNIT_MODULE)],
)
def test_each_module_gets_its_tier(marker: str, module: str, tiers: dict[str, set[str]]) -> None:
    assert tiers[module] == {marker}


def test_a_unit_test_cannot_start_a_process() -> None:
    with pytest.raises(UnitTestStartedProcessError, match="mark it integration"):
        subprocess.run(["true"], check=True)


@pytest.mark.integration  # starts a process, as the guard lets non-unit tests do
def test_other_tiers_may_start_processes() -> None:
    assert subprocess.run(["true"], check=True).returncode == 0


@pytest.mark.parametrize(
    ("module", "skipped"),
    [
        (SYSTEM_MODULE, True),  # pytestmark = pytest.mark.engine
        ("tests/test_training.py", True),  # pytestmark = pytest.mark.integration
        (INTEGRATION_MODULE, False),  # integration by its fixtures: read when imported
        ("tests/test_loadtest_runner.py", False),  # some tests integration, others unit
        (UNIT_MODULE, False),
    ],
)
def test_unit_runs_skip_only_modules_whose_pytestmark_leaves_no_unit_test(
    module: str, skipped: bool
) -> None:
    assert not_unit_module(REPO / module) is skipped
