"""Budgets on one Redis shared by several gateways (a real ``redis-server``, the session's
``redis_url`` fixture): the Lua reservation, and 32 concurrent requests over HTTP split
across two gateways that must not pass the budget between them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.metrics import GatewayMetrics
from gateway.model_catalog import ServedModel
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from gateway.settings.tenancy import BudgetConfig, BudgetPeriod, TenancyConfig
from gateway.state import GatewayState
from gateway.tenancy.budget import BudgetDraw, Spend, window_of
from gateway.tenancy.budget_redis import RedisBudgetStore
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.redis_limits import RedisLimitStore
from gateway.tenancy.usage import UsageStore
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine

pytestmark = pytest.mark.asyncio

ACME = generate_key()
ADMIN = generate_key()
PRICES = {"tiny-base": {"input": 1.0, "output": 3.0}, "pirate": {"input": 2.0, "output": 6.0}}


@pytest.fixture
def prefix() -> str:
    return f"b{uuid.uuid4().hex[:8]}:"


def draw(max_tokens: int | None = None, max_cost: float | None = None) -> BudgetDraw:
    budget = BudgetConfig(period=BudgetPeriod.DAY, max_tokens=max_tokens, max_cost=max_cost)
    return BudgetDraw("tenant:acme", budget, window_of(BudgetPeriod.DAY, time.time()))


async def test_redis_reservation_is_all_or_nothing_across_two_stores(
    redis_url: str, prefix: str
) -> None:
    async def seed(d: BudgetDraw) -> Spend:
        return Spend(10, 0.5)

    a_client = Redis.from_url(redis_url)
    a = RedisBudgetStore(a_client, key_prefix=prefix, seed=seed)
    b = RedisBudgetStore(Redis.from_url(redis_url), key_prefix=prefix, seed=seed)
    try:
        tokens, cost = draw(max_tokens=100), draw(max_cost=1.0)
        tokens = BudgetDraw("key:k", tokens.budget, tokens.window)
        both = (tokens, cost)
        assert await a.reserve(both, Spend(50, 0.25)) is None  # seeds: 10 tokens, 0.5 spent
        assert await b.reserve(both, Spend(41, 0.1)) == tokens  # 10 + 50 + 41 > 100
        assert await b.reserve(both, Spend(40, 0.26)) == cost  # 0.5 + 0.25 + 0.26 > 1
        assert await b.usage(cost) == (Spend(10, 0.5), Spend(50, 0.25))  # nothing taken
        assert await b.reserve(both, Spend(40, 0.25)) is None  # exactly both maxima
        assert await a.check(both) == tokens
        await b.settle(both, Spend(40, 0.25), Spend(15, 0.05))
        assert await a.usage(tokens) == (Spend(25, 0.55), Spend(50, 0.25))
        assert await a.check(both) is None
        await a.settle(both, Spend(50, 0.25), Spend())  # refused later: all back
        spent, reserved = await b.usage(cost)
        assert spent.tokens == 25 and spent.cost == pytest.approx(0.55)
        assert reserved.tokens == 0 and reserved.cost == pytest.approx(0.0, abs=1e-12)
        ttl = await a_client.ttl(a.key(tokens))
        assert 86_400 < ttl <= 2 * 86_400  # the rest of the day, plus a day of grace
    finally:
        await a.close()
        await b.close()


@dataclass
class App:
    client: httpx.AsyncClient
    engine: FakeEngine
    state: GatewayState

    async def chat(self, model: str = "pirate", max_tokens: int = 16) -> httpx.Response:
        body = {
            "model": model,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hello"}],
        }
        headers = {"Authorization": f"Bearer {ACME.key}"}
        return await self.client.post("/v1/chat/completions", json=body, headers=headers)


def write_config(kit: FakeKit, folder: Path, store: dict[str, Any], budget: dict[str, Any]) -> Path:
    folder.mkdir()
    config = {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "adapters": [{"name": n, "path": str(p)} for n, p in kit.adapters.items()],
        "registry": {"data_dir": str(folder / "data"), "allowed_roots": [str(kit.adapter_root)]},
        "admin": {"keys": [{"id": ADMIN.key_id, "hash": ADMIN.hash}]},
        "tenants": {
            "acme": {
                "keys": [{"id": ACME.key_id, "hash": ACME.hash}],
                "models": ["*"],
                "budget": budget,
            }
        },
        "pricing": {"models": PRICES},
        "limits_store": store,
    }
    path = folder / "loragate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@asynccontextmanager
async def app_on(
    kit: FakeKit,
    folder: Path,
    renderer: PromptRenderer,
    store: dict[str, Any],
    budget: dict[str, Any],
) -> AsyncIterator[App]:
    path = write_config(kit, folder, store, budget)
    engine = FakeEngine()  # answers 8 words: 8 tokens
    engine.token_delay = 0.01  # requests overlap between reservation and settlement
    app = create_app(Settings.load(path), engine_factory=lambda _: engine, renderer=renderer)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield App(client, engine, app.state.gateway)


async def test_32_concurrent_requests_on_two_gateways_stay_within_the_budget(
    redis_url: str, prefix: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    # A generous timeout: 64 connections open at once on a shared, loaded machine.
    store = {"kind": "redis", "url": redis_url, "key_prefix": prefix, "timeout": 5}
    budget = {"period": "day", "max_tokens": 400}
    async with (
        app_on(fake_kit, tmp_path / "a", renderer, store, budget) as a,
        app_on(fake_kit, tmp_path / "b", renderer, store, budget) as b,
    ):
        # Each reserves its prompt + 16 and uses its prompt + 8: refunds let more in.
        answers = await asyncio.gather(*(gw.chat() for _ in range(16) for gw in (a, b)))
        served = [r.json()["usage"] for r in answers if r.status_code == 200]
        refused = [r.json()["error"] for r in answers if r.status_code != 200]
        assert served and refused
        assert all(e["type"] == e["code"] == "insufficient_quota" for e in refused)
        assert {r.status_code for r in answers} == {200, 429}
        total = sum(u["total_tokens"] for u in served)
        prompt = served[0]["prompt_tokens"]
        assert total <= 400, f"{total - 400} tokens served past the budget"
        assert len(served) >= 400 // (prompt + 16)  # what fits even with no refund
        # The engines saw only the admitted requests; the counter holds what was served.
        assert len(a.engine.requests) + len(b.engine.requests) == len(served)
        counter = f"{prefix}budget:tenant:acme:{window_of(BudgetPeriod.DAY, time.time()).name}"
        redis = Redis.from_url(redis_url)
        st, rt = await redis.hmget(counter, ["st", "rt"])
        await redis.aclose()
        assert (int(st or 0), int(rt or 0)) == (total, 0)
        # Cost per request at the adapter's price, in /admin/usage and the metrics.
        cost = sum(u["prompt_tokens"] * 2.0 + u["completion_tokens"] * 6.0 for u in served) / 1e6
        headers = {"Authorization": f"Bearer {ADMIN.key}"}
        rows = []  # each gateway keeps its own usage file here: the two add up
        for gw in (a, b):
            usage = (await gw.client.get("/admin/usage", headers=headers)).json()
            rows += usage["data"]
            [status] = usage["budgets"]  # the shared counter, seen from either gateway
            assert status["tenant"] == "acme" and status["key_id"] is None
            assert (status["period"], status["max_tokens"]) == ("day", 400)
            assert (status["spent_tokens"], status["reserved_tokens"]) == (total, 0)
            assert usage["currency"] == "USD"
        assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) == total
        assert sum(r["cost"] for r in rows) == pytest.approx(cost)
        assert all(r["engine_seconds"] > 0 for r in rows)
        # The metrics of both gateways: either may have served every request.
        metric_cost, budget_refusals = 0.0, 0.0
        for gw in (a, b):
            text = (await gw.client.get("/metrics", headers=headers)).text
            for line in text.splitlines():
                name, _, value = line.rpartition(" ")
                if name == 'loragate_cost_total{adapter="pirate",model="pirate",tenant="acme"}':
                    metric_cost += float(value)
                if name == 'loragate_rejections_total{reason="budget"}':
                    budget_refusals += float(value)
        assert metric_cost == pytest.approx(cost)
        assert budget_refusals == len(refused)


async def test_a_request_cancelled_by_its_scope_still_settles_its_budget(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """A client that leaves cancels the request's scope (anyio, as Starlette does), which
    cancels every await in the request's exit again: the budget's settlement must still
    run, after the shared limits' release."""
    key = generate_key()
    tenancy = TenancyConfig.model_validate(
        {
            "tenants": {
                "acme": {
                    "keys": [{"id": key.key_id, "hash": key.hash}],
                    "models": ["*"],
                    "max_in_flight": 4,  # a slot on Redis: the release awaits Redis
                    "budget": {"period": "day", "max_tokens": 1000},
                }
            }
        }
    )
    g = Gatekeeper(
        tenancy,
        UsageStore(tmp_path / "usage.db"),
        GatewayMetrics(also_render=None),
        RedisLimitStore(Redis.from_url(redis_url), key_prefix=prefix),
        RedisBudgetStore(Redis.from_url(redis_url), key_prefix=prefix),
    )
    entered = asyncio.Event()

    async def hold() -> None:
        async with g.admit(g.authenticate(f"Bearer {key.key}"), 50) as ticket:
            g.route(ticket, "base", ServedModel)
            await ticket.reserve_exact(10, 50)
            ticket.engine_start()
            ticket.produced(5)
            entered.set()
            await asyncio.sleep(60)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(hold)
            await entered.wait()
            group.cancel_scope.cancel()
        budget = draw(max_tokens=1000)
        for _ in range(100):
            spent, reserved = await g.budgets.usage(budget)
            if reserved.tokens == 0:
                break
            await asyncio.sleep(0.01)
        assert (spent.tokens, reserved.tokens) == (15, 0), "the reservation was not settled"
    finally:
        await g.close()
        g.usage.close()


async def test_a_dead_gateways_reservations_lapse_after_the_lease(
    redis_url: str, prefix: str
) -> None:
    lease = 1.0
    a = RedisBudgetStore(Redis.from_url(redis_url), key_prefix=prefix, lease_seconds=lease)
    b = RedisBudgetStore(Redis.from_url(redis_url), key_prefix=prefix, lease_seconds=lease)
    budget = draw(max_tokens=100)
    try:
        assert await a.reserve((budget,), Spend(60), holder="1") is None
        assert await a.reserve((budget,), Spend(20), holder="1") is None  # one holder, 80
        await asyncio.sleep(lease * 1.8)  # alive: A renews its lease
        assert await b.reserve((budget,), Spend(30), holder="1") == budget
        assert a.leases.held  # A "dies": it stops renewing and never settles
        await a.leases.stop()
        died = time.monotonic()
        while await b.reserve((budget,), Spend(30), holder="2") is not None:
            assert time.monotonic() - died < lease + 1.0, "the reservation did not lapse"
            await asyncio.sleep(0.05)
        assert await b.usage(budget) == (Spend(), Spend(30))
        # A comes back and settles late: its lapsed reservation is not released twice,
        # and what it used is counted.
        await a.settle((budget,), Spend(80), Spend(50), holder="1")
        assert await b.usage(budget) == (Spend(50), Spend(30))
        await b.settle((budget,), Spend(30), Spend(30), holder="2")
        assert await a.usage(budget) == (Spend(80), Spend())
    finally:
        await a.close()
        await b.close()
