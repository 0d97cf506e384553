"""The request pipeline (fake engine): admission first, one path for chat and completions,
labels and limits fixed at admission, and the defects a review found, each pinned."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.errors import BaseModelMismatchError
from gateway.metrics import GatewayMetrics
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.tenancy import TenancyConfig
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.usage import SqliteUsageBackend, UsageBatch, UsageStore
from tests.conftest import FakeGateway, FakeKit
from tests.support.sse import parse_sse
from tests.support.tenanted import KEYS, Tenanted, bearer, config, tenanted_gateway


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[Tenanted]:
    async for gateway in tenanted_gateway(fake_kit, tmp_path, renderer):
        yield gateway


pytestmark = pytest.mark.asyncio


async def until(condition: Callable[[], object], seconds: float = 10.0) -> None:
    """Poll ``condition`` on the event loop until it holds."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def in_flight(state: Any, tenant: str) -> float:
    value = state.metrics.registry.get_sample_value(
        "loragate_in_flight_requests", {"tenant": tenant}
    )
    return value or 0.0


async def test_dependencies_run_on_the_event_loop(gw: Tenanted) -> None:
    """Plain ``def`` dependencies run in FastAPI's thread pool; ``authenticate`` is
    event-loop only (it sets the request's context labels)."""
    threads: list[threading.Thread] = []
    real = gw.state.gatekeeper.authenticate

    def spy(authorization: str | None) -> Any:
        threads.append(threading.current_thread())
        return real(authorization)

    gw.state.gatekeeper.authenticate = spy  # type: ignore[method-assign]
    r = await gw.chat("acme2", model="tiny-base", max_tokens=2)
    assert r.status_code == 200, r.text
    assert threads == [threading.main_thread()]


async def test_a_caller_over_its_limit_costs_no_rendering(
    gw: Tenanted, renderer: PromptRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Admission comes first: the 429 is decided before the prompt is rendered (``gw``'s
    pipeline was built with ``renderer``)."""
    rendered: list[object] = []
    real = renderer.chat

    def spy(messages: Any) -> list[int]:
        rendered.append(messages)
        return real(messages)

    monkeypatch.setattr(renderer, "chat", spy)
    for _ in range(3):  # acme's key: 3 requests per minute
        assert (await gw.chat("acme", model="tiny-base", max_tokens=2)).status_code == 200
    assert len(rendered) == 3  # the spy sees what the pipeline renders
    big = "word " * 50_000
    r = await gw.chat("acme", model="tiny-base", messages=[{"role": "user", "content": big}])
    assert r.status_code == 429, r.text
    assert len(rendered) == 3


async def test_small_prompts_render_on_the_loop_and_large_ones_in_a_thread(
    gw: Tenanted, renderer: PromptRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short chat is tokenized inline (cheaper than a thread hop); a long one goes to a
    worker thread so it never stalls the event loop (``gw``'s pipeline renders with
    ``renderer``)."""
    where: list[threading.Thread] = []
    real = renderer.chat

    def spy(messages: Any) -> list[int]:
        where.append(threading.current_thread())
        return real(messages)

    monkeypatch.setattr(renderer, "chat", spy)
    short = [{"role": "user", "content": "hi"}]
    r = await gw.chat("globex", model="robot", messages=short, max_tokens=2)
    assert r.status_code == 200, r.text
    # Longer than the tiny model's context: refused, but only once rendered.
    long = [{"role": "user", "content": "word " * 1_000}]
    r = await gw.chat("globex", model="robot", messages=long, max_tokens=2)
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert where[0] is threading.main_thread()
    assert where[1] is not threading.main_thread()


async def test_a_refused_request_costs_no_request_from_the_limit(gw: Tenanted) -> None:
    """globex: max_in_flight 1. A request refused for concurrency takes nothing from the
    request bucket (it was never served), so the next one is admitted."""
    cfg = config(gw_kit(gw), gw.state.settings.registry.data_dir)
    cfg["tenants"]["globex"]["rate_limit"] = {"requests_per_minute": 2}
    gw.config_path.write_text(yaml.safe_dump(cfg))
    assert (
        await gw.client.post("/admin/config/reload", headers=bearer("admin"))
    ).status_code == 200
    gw.engine.token_delay = 0.05
    first = asyncio.create_task(gw.chat("globex", model="robot"))
    await until(lambda: gw.engine.running)
    refused = await gw.chat("globex", model="robot")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == (
        "too_many_concurrent_requests"
    )
    assert (await first).status_code == 200
    gw.engine.token_delay = 0.0
    assert (await gw.chat("globex", model="robot")).status_code == 200


def gw_kit(gw: Tenanted) -> Any:
    from tests.conftest import FakeKit

    settings = gw.state.settings
    adapters = {a.name: a.path for a in settings.adapters}
    root = next(iter(adapters.values())).parent
    return FakeKit(settings.model.path, root, adapters)


async def test_a_reload_mid_request_keeps_the_gauges_exact(gw: Tenanted) -> None:
    """The in-flight gauge is decremented on the series it was incremented on, even when
    a reload removes the tenant while its request runs."""
    gw.engine.token_delay = 0.05
    task = asyncio.create_task(gw.chat("globex", model="robot"))
    await until(lambda: gw.engine.running)
    assert in_flight(gw.state, "globex") == 1
    cfg = config(gw_kit(gw), gw.state.settings.registry.data_dir)
    del cfg["tenants"]["globex"]
    gw.config_path.write_text(yaml.safe_dump(cfg))
    assert (
        await gw.client.post("/admin/config/reload", headers=bearer("admin"))
    ).status_code == 200
    assert (await task).status_code == 200
    assert in_flight(gw.state, "globex") == 0
    assert in_flight(gw.state, "other") == 0


async def test_a_key_removed_between_authentication_and_admission(
    tmp_path: Path,
) -> None:
    """The request keeps the directory it was authenticated under: no StopIteration."""
    cfg = {
        "tenants": {
            "acme": {
                "keys": [
                    {
                        "id": KEYS["acme"].key_id,
                        "hash": KEYS["acme"].hash,
                        "rate_limit": {"requests_per_minute": 1},
                    }
                ],
                "models": ["*"],
            }
        }
    }
    gatekeeper = Gatekeeper(
        TenancyConfig.model_validate(cfg), UsageStore(tmp_path / "u.db"), GatewayMetrics()
    )
    caller = gatekeeper.authenticate(f"Bearer {KEYS['acme'].key}")
    gatekeeper.reload(TenancyConfig.model_validate({"tenants": {"other": {"models": ["*"]}}}))
    async with gatekeeper.admit(caller, 0) as ticket:
        assert ticket.limits  # the key's own limits, from its directory
    with pytest.raises(Exception, match="Rate limit"):
        async with gatekeeper.admit(caller, 0):
            pass


async def test_an_adapter_for_another_base_is_a_plain_404(
    fake_gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = fake_gateway.app.state.gateway

    def mismatch(name: str) -> Any:
        raise BaseModelMismatchError("validated on another base model")

    monkeypatch.setattr(state.registry, "resolve", mismatch)
    r = await fake_gateway.client.post(
        "/v1/chat/completions",
        json={"model": "pirate", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "model_not_found"
    rejected = state.metrics.registry.get_sample_value(
        "loragate_rejections_total", {"reason": "not_found"}
    )
    assert rejected == 1


def completion(**body: Any) -> dict[str, Any]:
    return {"model": "tiny-base", "prompt": "Say hi", "max_tokens": 3, **body}


async def test_completion_stream_usage_counts_cached_tokens(fake_gateway: FakeGateway) -> None:
    fake_gateway.engine.cached_tokens = 2
    r = await fake_gateway.client.post(
        "/v1/completions",
        json=completion(stream=True, stream_options={"include_usage": True}),
    )
    events = parse_sse(r.text)
    usage = events[-2]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 2
    assert usage["completion_tokens"] == 3


async def test_completion_echo_token_ids_and_several_prompts(
    fake_gateway: FakeGateway,
) -> None:
    client = fake_gateway.client
    r = await client.post("/v1/completions", json=completion(echo=True))
    assert r.json()["choices"][0]["text"].startswith("Say hi")
    ids = fake_gateway.engine.requests[-1].prompt_token_ids
    r = await client.post("/v1/completions", json=completion(prompt=ids, echo=True))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"].startswith("Say hi")
    assert fake_gateway.engine.requests[-1].prompt_token_ids == ids
    r = await client.post("/v1/completions", json=completion(prompt=["a b", "c d e"], n=2))
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    prompts = [len(req.prompt_token_ids) for req in fake_gateway.engine.requests[-2:]]
    assert body["usage"]["prompt_tokens"] == sum(prompts)
    assert body["usage"]["completion_tokens"] == 4 * 3
    r = await client.post(
        "/v1/completions", json=completion(prompt=["a b", "c d e"], stream=True, n=2)
    )
    chunks = parse_sse(r.text)[:-1]  # without [DONE]
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1, 2, 3}


async def test_a_cancelled_completion_charges_what_was_produced(
    fake_gateway: FakeGateway,
) -> None:
    state = fake_gateway.app.state.gateway
    fake_gateway.engine.token_delay = 0.02
    fake_gateway.engine.reply_words = 50
    task = asyncio.create_task(
        fake_gateway.client.post("/v1/completions", json=completion(max_tokens=50))
    )
    await until(lambda: fake_gateway.engine.running)
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await until(lambda: not fake_gateway.engine.running)
    produced = state.metrics.registry.get_sample_value(
        "loragate_completion_tokens_total", {"tenant": "none", "adapter": "none"}
    )
    assert produced and produced > 0


async def test_token_limits_reserve_the_completion_budget(gw: Tenanted) -> None:
    """300 tokens per minute: n=8 x max_tokens=250 can never fit (refused before any
    work), and concurrent requests cannot together spend more than the budget."""
    cfg = config(gw_kit(gw), gw.state.settings.registry.data_dir)
    cfg["tenants"]["acme"]["rate_limit"] = {"tokens_per_minute": 300}
    gw.config_path.write_text(yaml.safe_dump(cfg))
    assert (
        await gw.client.post("/admin/config/reload", headers=bearer("admin"))
    ).status_code == 200
    seen = len(gw.engine.requests)
    r = await gw.chat("acme2", model="tiny-base", n=8, max_tokens=250)
    assert r.status_code == 429 and r.json()["error"]["code"] == "tokens_exceed_limit"
    gw.engine.token_delay = 0.02
    results = await asyncio.gather(
        *(gw.chat("acme2", model="tiny-base", max_tokens=100) for _ in range(8))
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) <= 2 and codes.count(429) >= 6, codes
    assert len(gw.engine.requests) - seen == codes.count(200)


def test_tenants_have_a_default_concurrency_cap() -> None:
    from gateway.settings.tenancy import DEFAULT_MAX_IN_FLIGHT, TenantConfig

    assert TenantConfig().max_in_flight == DEFAULT_MAX_IN_FLIGHT


def test_recording_usage_never_waits_for_a_commit(tmp_path: Path) -> None:
    """``record`` runs on the event loop: it must not wait while ``flush`` commits."""
    committing, release = threading.Event(), threading.Event()

    class SlowDisk(SqliteUsageBackend):
        """SQLite whose writes stall (a slow commit) while ``slow`` is set."""

        slow = True

        def write(self, batch: UsageBatch) -> None:
            if self.slow:
                committing.set()
                release.wait(10)
            super().write(batch)

    backend = SlowDisk(tmp_path / "usage.db")
    store = UsageStore(backend=backend)
    store.record(
        tenant="t", key_id="k", model="m", adapter=None, prompt_tokens=1, completion_tokens=1
    )
    flusher = threading.Thread(target=store.flush)
    flusher.start()
    assert committing.wait(10)
    recorder = threading.Thread(
        target=store.record,
        kwargs={
            "tenant": "t",
            "key_id": "k",
            "model": "m",
            "adapter": None,
            "prompt_tokens": 2,
            "completion_tokens": 2,
        },
    )
    recorder.start()
    recorder.join(5)
    blocked = recorder.is_alive()
    release.set()
    flusher.join(10)
    recorder.join(10)
    assert not blocked, "record() waited for the SQLite commit"
    backend.slow = False
    rows = store.query()
    assert sum(r.requests for r in rows) == 2
    store.close()
