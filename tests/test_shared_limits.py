"""Several gateways, one Redis: a tenant's rate limits and in-flight cap hold across
them. A real ``redis-server`` (Debian's) runs on a free loopback port for the session;
without one these tests skip."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.errors import RateLimitError
from gateway.metrics import GatewayMetrics
from gateway.model_catalog import ServedModel
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import LimitStoreSettings, Settings
from gateway.settings.keys import generate_key
from gateway.settings.tenancy import TenancyConfig
from gateway.tenancy.directory import Caller
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.limit_store import InFlightSlot, LimitsUnavailableError
from gateway.tenancy.rate_limit import Limit
from gateway.tenancy.redis_limits import RedisLimitStore
from gateway.tenancy.usage import UsageStore
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine
from tests.support.redis_fixtures import free_port
from tests.support.tenanted import KEYS, Tenanted, config

pytestmark = pytest.mark.asyncio

ACME = generate_key()
ACME2 = generate_key()


@pytest.fixture
def prefix() -> str:
    """Each test its own keys on the shared server."""
    return f"t{uuid.uuid4().hex[:8]}:"


def tenancy(**acme: Any) -> TenancyConfig:
    return TenancyConfig.model_validate(
        {
            "tenants": {
                "acme": {
                    "keys": [
                        {"id": ACME.key_id, "hash": ACME.hash},
                        {"id": ACME2.key_id, "hash": ACME2.hash},
                    ],
                    "models": ["*"],
                    **acme,
                }
            }
        }
    )


@asynccontextmanager
async def gateways(
    url: str, prefix: str, tmp_path: Path, lease: float = 30.0, **acme: Any
) -> AsyncIterator[tuple[Gatekeeper, Gatekeeper]]:
    """Two "gateways": two gatekeepers, each with its own Redis client, same keys."""
    pair = []
    for name in ("a", "b"):
        store = RedisLimitStore(Redis.from_url(url), key_prefix=prefix, lease_seconds=lease)
        usage = UsageStore(tmp_path / f"{name}.db")
        pair.append(Gatekeeper(tenancy(**acme), usage, GatewayMetrics(), store))
    try:
        yield pair[0], pair[1]
    finally:
        for g in pair:
            await g.close()
            g.usage.close()


def caller(g: Gatekeeper, key: Any = ACME) -> Caller:
    return g.authenticate(f"Bearer {key.key}")


async def admitted(g: Gatekeeper, tokens: int = 0, key: Any = ACME) -> bool:
    try:
        async with g.admit(caller(g, key), tokens):
            return True
    except RateLimitError:
        return False


async def test_requests_per_minute_hold_across_two_gateways(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    async with gateways(redis_url, prefix, tmp_path, rate_limit={"requests_per_minute": 5}) as (
        a,
        b,
    ):
        assert [await admitted(a) for _ in range(3)] == [True] * 3
        assert [await admitted(b) for _ in range(2)] == [True] * 2
        with pytest.raises(RateLimitError) as refused:
            async with b.admit(caller(b), 0):
                pass
        assert refused.value.headers["Retry-After"] == "12"  # 5 per minute: one every 12 s
        assert not await admitted(a)
        assert not await admitted(b, key=ACME2)  # the tenant's bucket, whichever key


async def test_tokens_per_minute_and_a_refund_seen_by_the_other_gateway(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    async with gateways(redis_url, prefix, tmp_path, rate_limit={"tokens_per_minute": 100}) as (
        a,
        b,
    ):
        async with a.admit(caller(a), 60) as ticket:
            assert not await admitted(b, 60)  # 40 left
            await ticket.reserve_exact(10, 0)  # the prompt was short: 50 back
            assert await admitted(b, 60)  # admitted, then settled: nothing used
            with pytest.raises(RateLimitError, match="Retry after"):
                await ticket.reserve_exact(10, 95)  # 85 more than the 90 left: refused
        # A request the engine never saw is charged nothing: all 100 are back.
        assert await admitted(b, 100)
        with pytest.raises(RateLimitError) as never:
            async with b.admit(caller(b), 101):
                pass
        assert never.value.code == "tokens_exceed_limit"


async def test_the_settlement_in_one_gateway_is_seen_by_the_other(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    async with gateways(redis_url, prefix, tmp_path, rate_limit={"tokens_per_minute": 100}) as (
        a,
        b,
    ):
        async with a.admit(caller(a), 10) as ticket:
            a.route(ticket, "base", ServedModel)
            await ticket.reserve_exact(10, 90)  # prompt + completion budget: all 100
            assert not await admitted(b, 10)
            ticket.engine_start()
            ticket.produced(30)
        # 40 used, 60 refunded on leaving A.
        assert not await admitted(b, 70)
        assert await admitted(b, 50)


async def test_in_flight_cap_holds_across_two_gateways(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    async with gateways(redis_url, prefix, tmp_path, max_in_flight=2) as (a, b):
        async with AsyncExitStack() as running_in_a:
            await running_in_a.enter_async_context(a.admit(caller(a), 0))
            async with b.admit(caller(b), 0):
                with pytest.raises(RateLimitError) as refused:
                    async with a.admit(caller(a), 0):
                        pass
                assert refused.value.code == "too_many_concurrent_requests"
                assert not await admitted(b)
        assert await admitted(b)  # A's request ended: its slot is free everywhere


async def test_a_refused_request_holds_no_slot_and_no_request(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    async with gateways(
        redis_url, prefix, tmp_path, max_in_flight=1, rate_limit={"requests_per_minute": 2}
    ) as (a, b):
        async with a.admit(caller(a), 0):
            assert not await admitted(b)  # over the cap: takes no request from the bucket
        assert await admitted(b)  # the second request of the minute
        assert not await admitted(a)  # rate-limited: and it left no slot behind
        redis = Redis.from_url(redis_url)
        try:
            assert await redis.zcard(f"{prefix}inflight:acme") == 0
        finally:
            await redis.aclose()


async def test_a_dead_gateways_slots_lapse_after_the_lease(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    lease = 1.0
    async with gateways(redis_url, prefix, tmp_path, lease=lease, max_in_flight=2) as (a, b):
        store = a.limit_store
        assert isinstance(store, RedisLimitStore)
        for _ in range(2):
            assert (await store.enter("acme", 2, {}, 0)).slot is not None
        await asyncio.sleep(lease * 1.8)  # alive: A renews its leases
        assert not await admitted(b)
        assert store.leases.held  # A "dies": it stops renewing and never releases
        await store.leases.stop()
        died = time.monotonic()
        assert not await admitted(b)
        while not await admitted(b):
            assert time.monotonic() - died < lease + 1.0, "slots did not lapse"
            await asyncio.sleep(0.05)


async def test_a_cancelled_request_still_frees_its_slot(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Client disconnects cancel the request's task: the release is shielded."""
    async with gateways(redis_url, prefix, tmp_path, max_in_flight=1) as (a, b):
        entered = asyncio.Event()

        async def hold() -> None:
            async with a.admit(caller(a), 0):
                entered.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(hold())
        await entered.wait()
        assert not await admitted(b)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(100):
            if await admitted(b):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the cancelled request's slot was not freed")


async def test_shutdown_hands_back_the_slots_still_held(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    async with gateways(redis_url, prefix, tmp_path, max_in_flight=1) as (a, b):
        store = a.limit_store
        assert (await store.enter("acme", 1, {}, 0)).slot is not None
        assert not await admitted(b)
        await store.close()
        assert await admitted(b)


async def test_unreachable_redis_fails_closed(tmp_path: Path) -> None:
    settings = LimitStoreSettings(
        kind="redis", url=f"redis://127.0.0.1:{free_port()}/0", timeout=0.2
    )
    store = RedisLimitStore.from_settings(settings)
    g = Gatekeeper(tenancy(max_in_flight=2), UsageStore(tmp_path / "u.db"), GatewayMetrics(), store)
    try:
        with pytest.raises(LimitsUnavailableError) as refused:
            async with g.admit(caller(g), 0):
                pass
        assert refused.value.status_code == 503 and refused.value.code == "limits_unavailable"
        assert refused.value.headers == {"Retry-After": "1"}
        # Settling a request that already ran never fails it.
        limits = {"tenant:acme": Limit(tokens_per_minute=10)}
        await store.release(InFlightSlot("acme", "gone"), limits, 5)
        await store.charge_tokens(limits, -5)
    finally:
        await g.close()
        g.usage.close()


# -- two apps over HTTP ---------------------------------------------------------------


def write_config(kit: FakeKit, folder: Path, limits_store: dict[str, Any]) -> Path:
    folder.mkdir()
    path = folder / "loragate.yaml"
    cfg = config(kit, folder / "data")
    cfg["limits_store"] = limits_store
    path.write_text(yaml.safe_dump(cfg))
    return path


@asynccontextmanager
async def app_on(
    kit: FakeKit, folder: Path, renderer: PromptRenderer, limits_store: dict[str, Any]
) -> AsyncIterator[Tenanted]:
    path = write_config(kit, folder, limits_store)
    engine = FakeEngine()
    app = create_app(
        Settings.load(path), engine_factory=lambda _: engine, renderer=renderer, config_path=path
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Tenanted(client, engine, app.state.gateway, path)


async def test_two_apps_share_limits_over_http(
    redis_url: str, prefix: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    store = {"kind": "redis", "url": redis_url, "key_prefix": prefix}
    async with (
        app_on(fake_kit, tmp_path / "a", renderer, store) as a,
        app_on(fake_kit, tmp_path / "b", renderer, store) as b,
    ):
        # acme's first key: 3 requests per minute, whichever gateway serves them.
        for gw in (a, b, a):
            assert (await gw.chat("acme", model="pirate", max_tokens=1)).status_code == 200
        r = await b.chat("acme", model="pirate", max_tokens=1)
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        assert r.headers["retry-after"] == "20"
        assert len(a.engine.requests) + len(b.engine.requests) == 3
        # globex: one request in flight, across both gateways.
        a.engine.token_delay = 0.05
        first = asyncio.create_task(a.chat("globex", model="robot"))
        while not a.engine.running:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        second = await b.chat("globex", model="robot")
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "too_many_concurrent_requests"
        assert (await first).status_code == 200
        assert (await b.chat("globex", model="robot")).status_code == 200


async def test_an_app_whose_redis_is_down_answers_503(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    store = {"kind": "redis", "url": f"redis://127.0.0.1:{free_port()}/0", "timeout": 0.2}
    async with app_on(fake_kit, tmp_path / "a", renderer, store) as a:
        r = await a.chat("acme", model="pirate", max_tokens=1)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "limits_unavailable"
        assert r.headers["retry-after"] == "1"
        assert a.engine.requests == []


def test_the_default_store_is_in_memory(tmp_path: Path) -> None:
    assert LimitStoreSettings().kind == "memory"
    assert KEYS  # the HTTP tests reuse test_tenancy_api's keys and config
