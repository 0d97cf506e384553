"""The fair queue through the HTTP API, fake engine at a known speed: a flooding tenant
does not delay a light one, overload is a fast 503 with Retry-After, a caller over its
own limits gets a 429 with Retry-After, and a queued request whose client leaves
leaves the queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from gateway.api.generation import respond
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.pipeline.chat import ChatEndpoint
from gateway.pipeline.disconnect import ClientDisconnected
from gateway.protocol.chat import ChatCompletionRequest
from gateway.settings.keys import generate_key
from gateway.state import GatewayState
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.fakes import FakeEngine

KEYS = {name: generate_key() for name in ("a", "b", "capped")}


def tenants() -> dict[str, Any]:
    def tenant(name: str, **extra: Any) -> dict[str, Any]:
        key = {"id": KEYS[name].key_id, "hash": KEYS[name].hash}
        return {"keys": [key], "models": ["*"], **extra}

    return {
        "a": tenant("a"),
        "b": tenant("b"),
        "capped": tenant("capped", max_in_flight=1, rate_limit={"requests_per_minute": 2}),
    }


async def gateway(
    kit: FakeKit, tmp: Path, renderer: PromptRenderer, engine: FakeEngine, **admission: Any
) -> AsyncIterator[FakeGateway]:
    settings = fake_settings(kit, tmp / "registry", tenants=tenants(), admission=admission)
    async with run_fake_gateway(settings, renderer, engine) as gw:
        yield gw


def state_of(gw: FakeGateway) -> GatewayState:
    state = gw.app.state.gateway
    assert isinstance(state, GatewayState)
    return state


async def chat(gw: FakeGateway, who: str, **body: Any) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "tiny-base", "messages": [{"role": "user", "content": who}], **body},
        headers={"Authorization": f"Bearer {KEYS[who].key}"},
    )
    return response, time.monotonic() - began


@pytest.fixture
async def slow_gw(fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer):
    engine = FakeEngine(reply_words=8)
    engine.token_delay = 0.01  # ~90 ms a request
    async for gw in gateway(
        fake_kit, tmp_path, renderer, engine, max_concurrency=2, max_queue=64, max_queue_wait=30
    ):
        yield gw


async def test_a_flooding_tenant_does_not_delay_a_light_one(slow_gw: FakeGateway):
    alone = [(await chat(slow_gw, "b"))[1] for _ in range(2)]
    flood = [asyncio.create_task(chat(slow_gw, "a")) for _ in range(16)]
    await asyncio.sleep(0.03)
    before = len(slow_gw.engine.requests)
    light = []
    for _ in range(3):
        response, seconds = await chat(slow_gw, "b")
        assert response.status_code == 200
        light.append(seconds)
    flooded = await asyncio.gather(*flood)
    assert all(r.status_code == 200 for r, _ in flooded)
    order = [r.prompt_token_ids for r in slow_gw.engine.requests[before:]]
    b_ids = slow_gw.engine.requests[0].prompt_token_ids
    # First come first served would put b's first request after a's 14 queued ones;
    # fair queuing gives it the next free slot.
    assert order.index(b_ids) <= 2
    a_mean = sum(s for _, s in flooded) / len(flooded)
    print(f"b alone {max(alone):.3f}s, b under a's flood {max(light):.3f}s, a mean {a_mean:.3f}s")
    assert max(light) < a_mean
    state = state_of(slow_gw)
    assert state.pipeline.queue.in_use == 0 and state.pipeline.queue.depth == 0


@pytest.mark.parametrize("headroom", [1, 0])
async def test_headroom_starts_a_light_tenants_requests_without_waiting(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, headroom: int
):
    engine = FakeEngine(reply_words=8)
    engine.token_delay = 0.01
    async for gw in gateway(
        fake_kit, tmp_path, renderer, engine, max_concurrency=8, max_queue=64, headroom=headroom
    ):
        queue = state_of(gw).pipeline.queue
        assert (await chat(gw, "b"))[0].status_code == 200  # b is active from now on
        flood = [asyncio.create_task(chat(gw, "a")) for _ in range(32)]
        await until(lambda: queue.depth > 0)  # noqa: B023 (awaited here, not later)
        assert queue.in_use == 8 - headroom  # one slot kept for b
        for _ in range(3):
            assert (await chat(gw, "b"))[0].status_code == 200
        assert all(r.status_code == 200 for r, _ in await asyncio.gather(*flood))
        metrics = state_of(gw).metrics.registry
        sample = {"tenant": "b"}
        assert metrics.get_sample_value("loragate_fair_queue_wait_seconds_count", sample) == 4
        waited = metrics.get_sample_value("loragate_fair_queue_wait_seconds_sum", sample)
        assert (waited == 0) == bool(headroom)  # with headroom b never waited for a slot


async def test_overload_is_a_fast_503_with_retry_after(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
):
    engine = FakeEngine(reply_words=8)
    engine.token_delay = 0.02
    async for gw in gateway(
        fake_kit, tmp_path, renderer, engine, max_concurrency=1, max_queue=3, max_queue_wait=30
    ):
        results = await asyncio.gather(*(chat(gw, "a") for _ in range(12)))
        served = [s for r, s in results if r.status_code == 200]
        refused = [(r, s) for r, s in results if r.status_code == 503]
        assert len(served) == 4 and len(refused) == 8  # one running, three waiting
        for response, seconds in refused:
            error = response.json()["error"]
            assert error["code"] == "overloaded" and error["type"] == "service_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
            assert seconds < min(served)  # refused before any engine work
        assert len(engine.requests) == 4
        metrics = state_of(gw).metrics.registry
        assert (
            metrics.get_sample_value("loragate_fair_queue_refusals_total", {"reason": "queue_full"})
            == 8
        )
        assert (
            metrics.get_sample_value("loragate_fair_queue_wait_seconds_count", {"tenant": "a"}) == 4
        )
        queue = state_of(gw).pipeline.queue
        assert queue.in_use == 0 and queue.depth == 0


async def test_a_caller_over_its_own_limits_gets_429_with_retry_after(slow_gw: FakeGateway):
    first, second = await asyncio.gather(chat(slow_gw, "capped"), chat(slow_gw, "capped"))
    statuses = sorted([first[0].status_code, second[0].status_code])
    assert statuses == [200, 429]
    refused = first[0] if first[0].status_code == 429 else second[0]
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "too_many_concurrent_requests"
    # The refused one cost nothing: one more fits in requests_per_minute, then 429.
    assert (await chat(slow_gw, "capped"))[0].status_code == 200
    third, _ = await chat(slow_gw, "capped")
    assert third.status_code == 429 and int(third.headers["Retry-After"]) >= 1
    assert third.json()["error"]["code"] == "rate_limit_exceeded"


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (a plain counter: nothing to wait on)
            await asyncio.sleep(0.002)


def disconnecting_request(after: float) -> Request:
    """A request whose client hangs up ``after`` seconds in (its body is read)."""

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(after)
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_queued_request_whose_client_leaves_leaves_the_queue(
    slow_gw: FakeGateway, stream: bool
):
    state = state_of(slow_gw)
    queue = state.pipeline.queue
    blockers = [asyncio.create_task(chat(slow_gw, "a", max_tokens=8)) for _ in range(2)]
    await until(lambda: queue.in_use == 2)
    caller = state.gatekeeper.authenticate(f"Bearer {KEYS['b'].key}")
    body = ChatCompletionRequest.model_validate(
        {
            "model": "tiny-base",
            "messages": [{"role": "user", "content": "leaver"}],
            "stream": stream,
        }
    )
    leaving = asyncio.create_task(
        respond(state.pipeline, ChatEndpoint(body), caller, disconnecting_request(0.05))
    )
    await until(lambda: queue.depth == 1)
    with pytest.raises(ClientDisconnected):
        await leaving
    assert queue.depth == 0 and queue.depths() == {}
    await asyncio.gather(*blockers)
    assert len(slow_gw.engine.requests) == 2  # the blockers only: the engine never saw it
    assert queue.in_use == 0
