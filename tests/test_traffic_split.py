"""Traffic splits: bucket assignment (distribution, stickiness, minimal movement), the
registry's validation and persistence (a restart, a second gateway on PostgreSQL), and
the catalog's choice of a version per caller."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.base_model import BaseModelSpec
from adapters.errors import AdapterNotFoundError, InvalidSplitError
from adapters.limits import AdapterLimits
from adapters.pg_registry_state import PostgresStateStore
from adapters.registry import AdapterRegistry
from adapters.sources import LocalDirectorySource
from adapters.traffic_split import BUCKETS, bucket, choose, weights_problem
from gateway.model_catalog import ModelCatalog
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

LIMITS = AdapterLimits(max_lora_rank=16)
CALLERS = [f"user-{i}" for i in range(10_000)]


def shares(weights: list[tuple[str, int]], name: str = "tone") -> Counter[str]:
    return Counter(choose(weights, bucket(name, c)) for c in CALLERS)


# ------------------------------------------------------------------ bucket assignment


@pytest.mark.parametrize(
    "weights",
    [[("v3", 90), ("v4", 10)], [("v1", 50), ("v2", 50)], [("a", 20), ("b", 30), ("c", 50)]],
)
def test_shares_over_10k_callers_match_the_weights(weights: list[tuple[str, int]]) -> None:
    got = shares(weights)
    for version, weight in weights:
        # Binomial sd at n=10k is at most 50 callers (0.5 points); allow 2 points.
        assert abs(got[version] / len(CALLERS) * 100 - weight) < 2.0, (version, got)


def test_buckets_are_uniform_and_depend_on_the_adapter_name() -> None:
    counts = Counter(bucket("tone", c) for c in CALLERS)
    assert set(counts) == set(range(BUCKETS))
    assert max(counts.values()) < 2 * len(CALLERS) / BUCKETS
    # Another adapter's split draws the same callers independently.
    same = sum(bucket("tone", c) == bucket("other", c) for c in CALLERS)
    assert same < len(CALLERS) * 0.03


def test_a_caller_always_gets_the_same_version() -> None:
    weights = [("v3", 90), ("v4", 10)]
    first = {c: choose(weights, bucket("tone", c)) for c in CALLERS[:500]}
    for _ in range(3):
        assert {c: choose(weights, bucket("tone", c)) for c in CALLERS[:500]} == first
    assert bucket("tone", "bob") == 25  # sha256: the same in every process


def test_changing_weights_moves_only_the_share_needed() -> None:
    before = {c: choose([("v3", 90), ("v4", 10)], bucket("tone", c)) for c in CALLERS}
    after = {c: choose([("v3", 80), ("v4", 20)], bucket("tone", c)) for c in CALLERS}
    moved = [c for c in CALLERS if before[c] != after[c]]
    # Only v3 -> v4 moves (nobody leaves v4), about 10% of callers.
    assert all(before[c] == "v3" and after[c] == "v4" for c in moved)
    assert abs(len(moved) / len(CALLERS) - 0.10) < 0.02
    # Ending a canary (v4 to 0) sends exactly v4's callers back.
    back = {c: choose([("v3", 100), ("v4", 0)], bucket("tone", c)) for c in CALLERS}
    assert {c for c in CALLERS if back[c] != before[c]} == {c for c in CALLERS if before[c] == "v4"}


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ({"v1": 100}, "between 2 and"),
        ({"v1": 60, "v2": 30}, "sum to 100 (they sum to 90)"),
        ({"v1": 50, "v2": 50.5}, "must be an integer"),
        ({"v1": True, "v2": 99}, "must be an integer"),
        ({"v1": -10, "v2": 110}, "must be an integer from 0 to 100"),
        ({"../x": 50, "v2": 50}, "Invalid adapter version"),
    ],
)
def test_bad_weights_are_named(weights: dict[str, object], problem: str) -> None:
    found = weights_problem(weights)
    assert found is not None and problem in found
    assert weights_problem({"v1": 70, "v2": 30}) is None


# ------------------------------------------------------------------ the registry


@pytest.fixture(scope="module")
def base() -> BaseModelSpec:
    return BaseModelSpec.from_directory(tiny_llama_dir(), name="tiny-base")


@pytest.fixture(scope="module")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("incoming")
    for seed in range(3):
        write_random_adapter(tiny_llama_dir(), root / f"a{seed}", seed=seed)
    return root


def add(reg: AdapterRegistry, root: Path, name: str, seed: int) -> None:
    reg.register(name, LocalDirectorySource(root / f"a{seed}", [root]))


@pytest.fixture
def registry(tmp_path: Path, base: BaseModelSpec, source_root: Path) -> Iterator[AdapterRegistry]:
    with AdapterRegistry.open(tmp_path / "data", base, LIMITS) as reg:
        for seed in range(3):
            add(reg, source_root, "tone", seed)  # v1 (active), v2, v3
        yield reg


def test_split_persists_across_a_restart(
    registry: AdapterRegistry, tmp_path: Path, base: BaseModelSpec
) -> None:
    registry.set_split("tone", {"v1": 90, "v2": 10})
    registry.close()
    with AdapterRegistry.open(tmp_path / "data", base, LIMITS) as again:
        split = again.split("tone")
        assert split is not None and split.weights == {"v1": 90, "v2": 10}
        assert again.clear_split("tone") == split
        assert again.split("tone") is None


def test_split_refusals_name_the_field(registry: AdapterRegistry) -> None:
    with pytest.raises(InvalidSplitError) as missing:
        registry.set_split("tone", {"v1": 50, "v9": 50})
    assert (missing.value.param, missing.value.status_code) == ("weights", 400)
    assert "tone@v9 does not exist" in missing.value.message
    registry.retire("tone", "v3")
    with pytest.raises(InvalidSplitError, match="tone@v3 is retiring"):
        registry.set_split("tone", {"v1": 50, "v3": 50})
    with pytest.raises(AdapterNotFoundError) as unknown:
        registry.set_split("nope", {"v1": 50, "v2": 50})
    assert unknown.value.message == "No adapter named 'nope'." and unknown.value.param == "name"
    assert registry.split("tone") is None


def test_retiring_a_split_version_ends_the_split(registry: AdapterRegistry) -> None:
    registry.set_split("tone", {"v1": 50, "v2": 50})
    registry.set_split("tone", {"v2": 50, "v3": 50})  # replaces the first
    assert registry.splits()[0].weights == {"v2": 50, "v3": 50}
    registry.retire("tone", "v1")  # not in the split: it stays
    assert registry.split("tone") is not None
    registry.retire("tone", "v3")
    assert registry.split("tone") is None


def test_the_catalog_picks_the_callers_version(registry: AdapterRegistry) -> None:
    catalog = ModelCatalog("tiny-base", registry, 1024)
    registry.set_split("tone", {"v2": 50, "v3": 50})
    picked = {c: catalog.resolve("tone", caller=c) for c in CALLERS[:400]}
    versions = Counter(s.adapter.version for s in picked.values() if s.adapter)
    assert set(versions) == {"v2", "v3"} and min(versions.values()) > 150
    assert all(s.split and s.id == "tone" for s in picked.values())
    # Sticky, and the metric label names the version.
    for c, served in list(picked.items())[:50]:
        again = catalog.resolve("tone", caller=c)
        assert again.adapter == served.adapter
        assert served.adapter is not None
        assert again.adapter_label == f"tone@{served.adapter.version}"
    # name@version and calls without a caller ignore the split.
    pinned = catalog.resolve("tone@v1", caller="user-1")
    assert pinned.adapter is not None and pinned.adapter.version == "v1" and not pinned.split
    plain = catalog.resolve("tone")
    assert plain.adapter is not None and plain.adapter.version == "v1"
    assert plain.adapter_label == "tone"
    registry.clear_split("tone")
    cleared = catalog.resolve("tone", caller="user-1")
    assert cleared.adapter is not None and cleared.adapter.version == "v1" and not cleared.split


# ------------------------------------------------------------------ several gateways


def test_a_split_set_on_one_gateway_routes_on_the_other(
    pg_url: str, tmp_path: Path, base: BaseModelSpec, source_root: Path
) -> None:
    def open_() -> AdapterRegistry:
        store = PostgresStateStore(pg_url, timeout=5.0)
        return AdapterRegistry.open(
            tmp_path / "shared", base, LIMITS, state_store=store, refresh_seconds=0.1
        )

    with open_() as a, open_() as b:
        add(a, source_root, "tone", 0)
        add(a, source_root, "tone", 1)
        a.set_split("tone", {"v1": 30, "v2": 70})
        wait_until(lambda: b.split("tone") is not None)
        catalog_a, catalog_b = (ModelCatalog("tiny-base", r, 1024) for r in (a, b))
        for caller in CALLERS[:100]:
            assert (
                catalog_a.resolve("tone", caller).adapter
                == catalog_b.resolve("tone", caller).adapter
            )


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)
