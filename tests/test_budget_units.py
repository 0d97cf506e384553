"""Budgets without a server: periods, prices, the reservation arithmetic of the in-memory
store, the gatekeeper's reserve-and-settle, and spend in the usage store."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.metrics import GatewayMetrics
from gateway.model_catalog import ServedModel
from gateway.settings.keys import generate_key
from gateway.settings.tenancy import (
    BudgetConfig,
    BudgetPeriod,
    KeyConfig,
    PricingConfig,
    TenancyConfig,
    TenantConfig,
)
from gateway.tenancy.budget import (
    BudgetDraw,
    BudgetExceededError,
    MemoryBudgetStore,
    Pricing,
    Spend,
    budget_draws,
    window_of,
)
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.usage import UsageStore

pytestmark = pytest.mark.asyncio

KEY = generate_key()
NOW = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def ts(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


def draw(
    max_tokens: int | None = None, max_cost: float | None = None, subject: str = "t:a"
) -> BudgetDraw:
    budget = BudgetConfig(period=BudgetPeriod.DAY, max_tokens=max_tokens, max_cost=max_cost)
    return BudgetDraw(subject, budget, window_of(BudgetPeriod.DAY, NOW))


def test_periods_roll_over_at_utc_day_and_month_boundaries() -> None:
    day = window_of(BudgetPeriod.DAY, NOW)
    assert (day.name, day.start, day.end) == ("day:2026-12-31", ts(2026, 12, 31), ts(2027, 1, 1))
    assert window_of(BudgetPeriod.DAY, ts(2027, 1, 1)).name == "day:2027-01-01"
    month = window_of(BudgetPeriod.MONTH, NOW)
    assert (month.name, month.start, month.end) == (
        "month:2026-12",
        ts(2026, 12, 1),
        ts(2027, 1, 1),
    )
    feb = window_of(BudgetPeriod.MONTH, ts(2028, 2, 29, 12))
    assert (feb.start, feb.end) == (ts(2028, 2, 1), ts(2028, 3, 1))


def test_budget_config_refuses_negative_and_unknown_periods() -> None:
    for bad in (
        {"period": "week"},
        {"period": "day", "max_tokens": -1},
        {"period": "day", "max_cost": -0.5},
    ):
        with pytest.raises(ValueError):
            BudgetConfig.model_validate(bad)


def test_prices_adapter_then_base_then_default() -> None:
    pricing = Pricing(
        PricingConfig.model_validate(
            {
                "models": {
                    "base": {"input": 1.0, "cached_input": 0.25, "output": 4.0},
                    "pirate": {"input": 2.0, "output": 8.0},
                },
                "default": {"input": 10.0, "output": 10.0},
            }
        )
    )
    million = 1_000_000
    assert pricing.cost("base", None, prompt_tokens=million, completion_tokens=million) == 5.0
    assert pricing.cost("base", "robot", prompt_tokens=million, completion_tokens=0) == 1.0
    assert pricing.cost("base", "pirate", prompt_tokens=million, completion_tokens=million) == 10.0
    # Cached prompt tokens at the cached price; no cached price: the input price.
    assert (
        pricing.cost(
            "base", None, prompt_tokens=million, completion_tokens=0, cached_tokens=million // 2
        )
        == 0.625
    )
    assert (
        pricing.cost(
            "base", "pirate", prompt_tokens=million, completion_tokens=0, cached_tokens=million
        )
        == 2.0
    )
    assert pricing.cost("other", None, prompt_tokens=million, completion_tokens=0) == 10.0
    assert Pricing(PricingConfig()).cost("base", None, prompt_tokens=5, completion_tokens=5) == 0.0


async def test_reserve_is_all_or_nothing_and_settle_refunds_the_rest() -> None:
    store = MemoryBudgetStore()
    key, tenant = draw(max_tokens=100, subject="key:k"), draw(max_tokens=150, subject="tenant:t")
    assert await store.reserve((key, tenant), Spend(60)) is None
    # 60 + 50 passes the key's 100: refused on the key, nothing taken from the tenant.
    assert await store.reserve((key, tenant), Spend(50)) == key
    assert await store.usage(tenant) == (Spend(), Spend(60))
    assert await store.reserve((key, tenant), Spend(40)) is None  # exactly 100: fits
    await store.settle((key, tenant), Spend(60), Spend(25))  # used 25 of its 60
    assert await store.usage(key) == (Spend(25), Spend(40))
    assert await store.check((key,)) is None
    assert await store.reserve((key,), Spend(36)) == key  # 25 + 40 + 36 > 100
    assert await store.reserve((key,), Spend(35)) is None
    assert await store.check((key,)) == key  # 100 of 100 spent or reserved
    await store.settle((key,), Spend(35), Spend())  # a request refused later: all back
    assert await store.check((key,)) is None


async def test_cost_budget_with_float_sums() -> None:
    store = MemoryBudgetStore()
    budget = draw(max_cost=0.3)
    for _ in range(3):  # 0.1 + 0.1 + 0.1 is 0.30000000000000004 in floats
        assert await store.reserve((budget,), Spend(1, 0.1)) is None
    assert await store.reserve((budget,), Spend(1, 0.01)) == budget
    assert await store.check((budget,)) == budget


async def test_a_counter_starts_from_its_seed_read_once() -> None:
    reads: list[str] = []

    async def seed(d: BudgetDraw) -> Spend:
        reads.append(d.counter)
        await asyncio.sleep(0.01)
        return Spend(90, 0.0)

    store = MemoryBudgetStore(seed=seed)
    budget = draw(max_tokens=100)
    answers = await asyncio.gather(*(store.reserve((budget,), Spend(5)) for _ in range(8)))
    assert reads == [budget.counter]  # one read, shared by every request meanwhile
    assert answers.count(None) == 2 and answers.count(budget) == 6  # 90 + 2 x 5


async def test_a_failed_seed_is_read_again() -> None:
    calls = 0

    async def seed(d: BudgetDraw) -> Spend:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("usage store down")
        return Spend(3)

    store = MemoryBudgetStore(seed=seed)
    with pytest.raises(RuntimeError):
        await store.check((draw(max_tokens=10),))
    assert await store.usage(draw(max_tokens=10)) == (Spend(3), Spend())


def test_draws_of_a_key_and_its_tenant() -> None:
    key = KeyConfig(
        id=KEY.key_id, hash=KEY.hash, budget=BudgetConfig(period=BudgetPeriod.DAY, max_tokens=5)
    )
    tenant = TenantConfig(keys=[key], budget=BudgetConfig(period=BudgetPeriod.MONTH, max_cost=1.0))
    draws = budget_draws("acme", tenant, key, NOW)
    assert [(d.subject, d.window.name) for d in draws] == [
        (f"key:{KEY.key_id}", "day:2026-12-31"),
        ("tenant:acme", "month:2026-12"),
    ]
    assert budget_draws(None, None, None, NOW) == ()


def gatekeeper(tmp_path: Path, **tenant: object) -> Gatekeeper:
    tenancy = TenancyConfig.model_validate(
        {
            "tenants": {
                "acme": {"keys": [{"id": KEY.key_id, "hash": KEY.hash}], "models": ["*"], **tenant}
            },
            "pricing": {"models": {"base": {"input": 1.0, "output": 2.0}}},
        }
    )
    return Gatekeeper(tenancy, UsageStore(tmp_path / "usage.db"), GatewayMetrics(also_render=None))


async def serve(g: Gatekeeper, prompt: int, max_tokens: int, produce: int) -> int:
    """One request through the gatekeeper; the tokens it was served (0: refused)."""
    try:
        async with g.admit(g.authenticate(f"Bearer {KEY.key}"), max_tokens) as ticket:
            g.route(ticket, "base", ServedModel)
            await ticket.reserve_exact(prompt, max_tokens)
            ticket.engine_start()
            for _ in range(produce):
                await asyncio.sleep(random.random() / 1000)
                ticket.produced(1)
            return prompt + produce
    except BudgetExceededError:
        return 0


async def test_32_concurrent_requests_never_pass_the_budget(tmp_path: Path) -> None:
    """Each reserves 10 + 20 tokens and uses 10 + 5..20: the budget of 200 admits
    requests while spend + reservations fit, and refunds let later ones in."""
    g = gatekeeper(tmp_path, budget={"period": "day", "max_tokens": 200})
    random.seed(7)
    served = await asyncio.gather(*(serve(g, 10, 20, random.randint(5, 20)) for _ in range(32)))
    draws = budget_draws("acme", g.directory.config.tenants["acme"], None, time.time())
    spent, reserved = await g.budgets.usage(draws[0])
    assert sum(served) == spent.tokens <= 200
    assert reserved.tokens == 0 and reserved.cost == pytest.approx(0.0, abs=1e-12)
    assert served.count(0) > 0 and len([s for s in served if s]) >= 200 // 30
    assert spent.cost == pytest.approx(
        sum(10 * 1.0 + (s - 10) * 2.0 for s in served if s) / 1_000_000
    )
    g.usage.close()


async def test_refused_before_the_engine_with_insufficient_quota(tmp_path: Path) -> None:
    g = gatekeeper(tmp_path, budget={"period": "month", "max_tokens": 50})
    assert await serve(g, 10, 20, 20) == 30
    with pytest.raises(BudgetExceededError) as refused:  # 30 + 30 > 50: at reservation
        async with g.admit(g.authenticate(f"Bearer {KEY.key}"), 20) as ticket:
            g.route(ticket, "base", ServedModel)
            await ticket.reserve_exact(10, 20)
            pytest.fail("admitted past the budget")
    assert refused.value.status_code == 429
    assert (refused.value.error_type, refused.value.code) == ("insufficient_quota",) * 2
    assert "Retry-After" not in refused.value.headers
    assert await serve(g, 10, 10, 10) == 20  # exactly the 20 left
    with pytest.raises(BudgetExceededError):  # spent: refused at admission
        async with g.admit(g.authenticate(f"Bearer {KEY.key}"), 1):
            pytest.fail("admitted with the budget spent")
    assert (
        g.metrics.registry.get_sample_value("loragate_rejections_total", {"reason": "budget"}) == 2
    )
    g.usage.close()


async def test_spend_survives_a_restart_through_the_usage_store(tmp_path: Path) -> None:
    g = gatekeeper(tmp_path, budget={"period": "day", "max_tokens": 50})
    assert await serve(g, 10, 20, 20) == 30
    g.usage.close()
    again = gatekeeper(tmp_path, budget={"period": "day", "max_tokens": 50})
    assert await serve(again, 10, 20, 20) == 0  # 30 spent today, read from usage.db
    assert await serve(again, 10, 10, 10) == 20
    again.usage.close()


def test_usage_rows_carry_cost_and_engine_seconds(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.db")
    for key_id in ("k1", "k1", "k2"):
        store.record(
            tenant="acme",
            key_id=key_id,
            model="m",
            adapter="a",
            prompt_tokens=10,
            completion_tokens=5,
            cost=0.25,
            engine_seconds=1.5,
            now=ts(2026, 12, 7, 12),
        )
    rows = store.query(tenant="acme")
    assert [(r.key_id, r.requests, r.cost, r.engine_seconds) for r in rows] == [
        ("k1", 2, 0.5, 3.0),
        ("k2", 1, 0.25, 1.5),
    ]
    assert store.spent(key_id="k1") == Spend(30, 0.5)
    assert store.spent(tenant="acme", since=ts(2026, 12, 7)) == Spend(45, 0.75)
    assert store.spent(tenant="acme", since=ts(2026, 12, 8)) == Spend()
    assert store.spent_in(BudgetPeriod.DAY, key_id="k2", now=ts(2026, 12, 7, 23)) == Spend(15, 0.25)
    assert store.spent_in(BudgetPeriod.DAY, key_id="k2", now=ts(2026, 12, 8, 0)) == Spend()
    store.close()


def test_a_usage_file_without_the_spend_columns_gets_them(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE usage (minute INTEGER NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL, "
        "model TEXT NOT NULL, adapter TEXT NOT NULL, requests INTEGER NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, "
        "PRIMARY KEY (minute, tenant, key_id, model, adapter))"
    )
    db.execute("INSERT INTO usage VALUES (1, 'acme', 'k', 'm', '', 2, 20, 10)")
    db.commit()
    db.close()
    store = UsageStore(path)
    store.record(
        tenant="acme",
        key_id="k",
        model="m",
        adapter=None,
        prompt_tokens=1,
        completion_tokens=1,
        cost=0.5,
        now=90,
    )
    [row] = store.query()
    assert (row.requests, row.prompt_tokens, row.cost) == (3, 21, 0.5)
    store.close()
