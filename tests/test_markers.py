"""Every test carries one tier marker (``tests/conftest.py``): ``system`` for a real
engine, replica, gateway process or browser, ``integration`` for a Redis, PostgreSQL,
S3 or other subprocess server, ``unit`` for the rest; ``make test-fast`` runs ``-m unit``."""

from __future__ import annotations

from pathlib import Path

import pytest

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
