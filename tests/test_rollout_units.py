"""Rollout decisions with fakes: the canary rollback verdict (error rate, latency ratio,
minimum requests, the window), the registry's compare-and-clear, the shadow log's
bounds, the shadow split settings' validation, and an alias split's config checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from adapters.base_model import BaseModelSpec
from adapters.limits import AdapterLimits
from adapters.pg_registry_state import PostgresStateStore
from adapters.registry import AdapterRegistry
from adapters.sources import LocalDirectorySource
from adapters.traffic_split import RollbackBounds, ShadowConfig, SplitOptions, TrafficSplit
from gateway.adapter_runtime.canary_rollback import CanaryWatch, VersionFigures, regression
from gateway.metrics import GatewayMetrics
from gateway.pipeline.shadow_log import ShadowAnswer, ShadowLog
from gateway.settings.tenancy import TenantConfig
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

BOUNDS = RollbackBounds(max_error_rate=0.05, max_latency_ratio=1.5, min_requests=50)


def figures(requests: int, errors: int = 0, mean: float = 1.0) -> VersionFigures:
    return VersionFigures(requests, errors, mean * requests, requests)


@pytest.mark.parametrize(
    ("stable", "canary", "why"),
    [
        (figures(500), figures(49, errors=49), None),  # under min_requests: no verdict
        (figures(500), figures(50, errors=2), None),  # 4 %: within 5 %
        (figures(500), figures(50, errors=3), "error rate 0.060"),
        (figures(500, mean=1.0), figures(50, mean=1.5), None),  # exactly the bound
        (figures(500, mean=1.0), figures(50, mean=1.6), "latency 1.60x"),
        (figures(49, mean=1.0), figures(50, mean=9.0), None),  # stable too few to compare
    ],
)
def test_regression_verdicts(
    stable: VersionFigures, canary: VersionFigures, why: str | None
) -> None:
    got = regression(BOUNDS, stable, canary)
    assert (got is None) == (why is None), got
    if why is not None:
        assert got is not None and got.startswith(why)


def test_rollback_bounds_need_one_bound() -> None:
    with pytest.raises(ValidationError, match="max_error_rate or max_latency_ratio"):
        RollbackBounds(min_requests=3)
    with pytest.raises(ValidationError):
        ShadowConfig(version="v2", percent=101)
    with pytest.raises(ValidationError, match="between 2"):
        TrafficSplit(name="tone", weights={"v1": 100})  # one version needs a shadow
    one = TrafficSplit(
        name="tone", weights={"v1": 100}, shadow=ShadowConfig(version="v2", percent=5)
    )
    assert one.versions == {"v1", "v2"}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[AdapterRegistry]:
    """``tone`` v1 (active) and v2, on a real registry."""
    base = tiny_llama_dir()
    root = tmp_path / "src"
    spec = BaseModelSpec.from_directory(base, name="tiny-base")
    with AdapterRegistry.open(tmp_path / "reg", spec, AdapterLimits(max_lora_rank=16)) as reg:
        for seed in (1, 2):
            write_random_adapter(base, root / f"tone-{seed}", seed=seed)
            reg.register("tone", LocalDirectorySource(root / f"tone-{seed}", [root]))
        yield reg


def test_compare_and_clear_leaves_a_newer_split(registry: AdapterRegistry) -> None:
    judged = registry.set_split("tone", {"v1": 50, "v2": 50})
    newer = registry.set_split("tone", {"v1": 90, "v2": 10})
    assert registry.clear_split("tone", judged) is None
    assert registry.split("tone") == newer
    assert registry.clear_split("tone", newer) == newer
    assert registry.split("tone") is None


def test_a_retired_shadow_version_ends_the_split(registry: AdapterRegistry) -> None:
    options = SplitOptions(shadow=ShadowConfig(version="v2", percent=10))
    registry.set_split("tone", {"v1": 100}, options)
    registry.retire("tone", "v2")
    assert registry.split("tone") is None


class Audit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str | None, dict[str, Any]]] = []

    async def __call__(
        self, actor: str, action: str, target: str | None, detail: dict[str, Any]
    ) -> None:
        self.entries.append((actor, action, target, detail))


async def test_the_watch_judges_the_window_since_it_first_saw_the_split(
    registry: AdapterRegistry,
) -> None:
    """Figures before the split was seen (a slow v2 earlier) do not count; the latency
    ratio against the active version ends the split once it passes the bound."""
    seen = {"v1": figures(1000, mean=1.0), "v2": figures(1000, mean=9.0)}
    audit = Audit()
    metrics = GatewayMetrics(CollectorRegistry(), also_render=None)
    watch = CanaryWatch(registry, metrics, audit, figures=lambda name: dict(seen))
    registry.set_split("tone", {"v1": 90, "v2": 10}, SplitOptions(rollback=BOUNDS))
    assert await watch.check() == []  # baseline: the old slow figures
    seen["v1"] = figures(1500, mean=1.0)
    seen["v2"] = VersionFigures(1060, 0, 9000 + 60 * 1.2, 1060)  # 60 new at 1.2 s: fine
    assert await watch.check() == []
    seen["v2"] = VersionFigures(1100, 0, 9000 + 60 * 1.2 + 40 * 3.0, 1100)  # mean 1.92 s
    done = await watch.check()
    assert [d.version for d in done] == ["v2"] and "latency 1.92x" in done[0].reason
    assert registry.split("tone") is None
    assert [(a, act, t) for a, act, t, _ in audit.entries] == [
        ("system", "adapter.split.rollback", "tone")
    ]


async def test_the_watch_leaves_a_split_set_while_it_judged_the_old_one(
    registry: AdapterRegistry,
) -> None:
    seen = {"v1": figures(0), "v2": figures(0)}
    operator: list[TrafficSplit] = []

    def figures_meanwhile(name: str) -> dict[str, VersionFigures]:
        if seen["v2"].errors and not operator:  # an operator sets a new split meanwhile
            operator.append(registry.set_split("tone", {"v1": 90, "v2": 10}))
        return dict(seen)

    audit = Audit()
    metrics = GatewayMetrics(CollectorRegistry(), also_render=None)
    watch = CanaryWatch(registry, metrics, audit, figures=figures_meanwhile)
    registry.set_split("tone", {"v1": 50, "v2": 50}, SplitOptions(rollback=BOUNDS))
    await watch.check()
    seen["v2"] = figures(100, errors=100)
    assert await watch.check() == []
    assert registry.split("tone") == operator[0] and audit.entries == []


def test_the_shadow_log_keeps_its_bounds_per_tenant() -> None:
    log = ShadowLog(max_entries=3, max_bytes=40)

    def answer(text: str) -> ShadowAnswer:
        return ShadowAnswer(version="v", text=[text], completion_tokens=1, seconds=0.1)

    for i in range(5):
        log.add("acme", "tone", f"r{i}", answer("a" * 5), answer("b" * 5))
    log.add("globex", "tone", "g0", answer("c"), answer("d"))
    acme, more = log.page("tone", tenant="acme")
    assert [e.request_id for e in acme] == ["r2", "r3", "r4"] and not more  # oldest dropped
    assert [e.request_id for e in log.page("tone", tenant="globex")[0]] == ["g0"]
    log.add("acme", "tone", "big", answer("x" * 30), answer("y" * 5))  # 35 bytes
    assert [e.request_id for e in log.page("tone", tenant="acme")[0]] == ["big"]
    assert log.page("other")[0] == []
    assert log.dropped == 5


def test_an_alias_split_is_checked_against_the_tenants_models() -> None:
    ok = {"models": ["a", "b"], "aliases": {"s": {"model": "a", "split": {"a": 90, "b@v2": 10}}}}
    assert TenantConfig.model_validate(ok).aliases["s"].split == {"a": 90, "b@v2": 10}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"models": ["a"], "aliases": {"s": {"model": "a", "split": {"a": 50, "b": 50}}}}, "'b'"),
        (
            {"models": ["*"], "aliases": {"s": {"model": "c", "split": {"a": 50, "b": 50}}}},
            "`model`",
        ),
        ({"models": ["*"], "aliases": {"s": {"model": "a", "split": {"a": 100}}}}, "between 2"),
    ]
    for data, message in bad:
        with pytest.raises(ValidationError, match=message):
            TenantConfig.model_validate(data)


# ------------------------------------------------------------------ several gateways


async def test_two_gateways_on_one_store_end_in_the_same_state(pg_url: str, tmp_path: Path) -> None:
    """Both gateways see the canary fail; one clears the split and audits it, the other
    finds it gone (no second audit), and both serve without a split afterwards."""
    base = tiny_llama_dir()
    spec = BaseModelSpec.from_directory(base, name="tiny-base")
    root = tmp_path / "src"

    def open_() -> AdapterRegistry:
        store = PostgresStateStore(pg_url, timeout=5.0)
        return AdapterRegistry.open(
            tmp_path / "shared",
            spec,
            AdapterLimits(max_lora_rank=16),
            state_store=store,
            refresh_seconds=0.1,
        )

    with open_() as a, open_() as b:
        for seed in (1, 2):
            write_random_adapter(base, root / f"tone-{seed}", seed=seed)
            a.register("tone", LocalDirectorySource(root / f"tone-{seed}", [root]))
        bounds = RollbackBounds(max_error_rate=0.1, min_requests=10)
        a.set_split("tone", {"v1": 50, "v2": 50}, SplitOptions(rollback=bounds))
        deadline = time.monotonic() + 5
        while b.split("tone") is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        seen = {"v1": figures(0), "v2": figures(0)}
        audits = [Audit(), Audit()]
        watches = [
            CanaryWatch(
                reg,
                GatewayMetrics(CollectorRegistry(), also_render=None),
                audit,
                figures=lambda name: dict(seen),
            )
            for reg, audit in zip((a, b), audits, strict=True)
        ]
        for watch in watches:
            assert await watch.check() == []  # windows start
        seen["v2"] = figures(20, errors=20)
        first = await watches[0].check()
        second = await watches[1].check()  # judged on b's (stale) copy: compare-and-clear
        assert [len(first), len(second)] == [1, 0]
        assert [len(x.entries) for x in audits] == [1, 0]
        deadline = time.monotonic() + 5
        while b.split("tone") is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert a.split("tone") is None
