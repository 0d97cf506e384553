"""Several gateways, one usage ledger in a real PostgreSQL (``tests/support/postgres_fixtures``):
totals are exact across gateways, a retried batch is never counted twice, and usage
recorded while PostgreSQL is away is written when it is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.tenancy.pg_usage import PostgresUsageBackend
from gateway.tenancy.usage import UsageBatch, UsageRow, UsageStore, UsageUnavailableError
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine
from tests.support.postgres_fixtures import PostgresServer, write_url
from tests.support.tenanted import KEYS, Tenanted, bearer, config

NOW = 1_800_000_000.0


@pytest.fixture
def open_usage(pg_url: str) -> Iterator[Callable[..., UsageStore]]:
    """Usage stores ("gateways") on the test's own schema."""
    opened: list[UsageStore] = []

    def open_(name: str = "gw", **options: Any) -> UsageStore:
        store = UsageStore(backend=PostgresUsageBackend(pg_url, gateway=name, timeout=5), **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def record(store: UsageStore, n: int, tenant: str = "acme", tokens: int = 1) -> None:
    for _ in range(n):
        store.record(
            tenant=tenant,
            key_id="k1",
            model="pirate",
            adapter="pirate",
            prompt_tokens=10,
            completion_tokens=tokens,
            now=NOW,
        )


def totals(rows: list[UsageRow]) -> dict[str, tuple[int, int, int]]:
    return {r.tenant: (r.requests, r.prompt_tokens, r.completion_tokens) for r in rows}


def test_two_gateways_add_up_exactly(open_usage: Callable[..., UsageStore]) -> None:
    a, b = open_usage("a"), open_usage("b")
    record(a, 3)
    record(b, 4, tokens=2)
    record(b, 1, tenant="globex")
    assert a.flush() == 1 and b.flush() == 2
    assert totals(b.query()) == {"acme": (7, 70, 3 + 8), "globex": (1, 10, 1)}
    record(a, 2)  # a second batch of a, not flushed yet: a's query flushes it
    expected = {"acme": (9, 90, 3 + 8 + 2), "globex": (1, 10, 1)}
    assert totals(a.query()) == expected
    assert totals(b.query()) == expected  # every gateway reads everyone's usage
    assert totals(a.query(tenant="globex")) == {"globex": (1, 10, 1)}
    assert a.query(since=NOW + 120) == []


def test_a_batch_whose_commit_ack_was_lost_is_not_counted_twice(
    open_usage: Callable[..., UsageStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_usage()
    backend = store.backend
    assert isinstance(backend, PostgresUsageBackend)
    real_write = backend.write
    sent: list[str] = []

    def committed_then_cut(batch: UsageBatch) -> None:
        real_write(batch)  # the transaction commits...
        sent.append(batch.id)
        raise UsageUnavailableError("connection lost before the commit was acknowledged")

    monkeypatch.setattr(backend, "write", committed_then_cut)
    record(store, 5)
    with pytest.raises(UsageUnavailableError):
        store.flush()
    assert store.unsent_rows == 1  # kept: the gateway cannot know it was written
    monkeypatch.setattr(backend, "write", real_write)
    record(store, 2)  # a new batch after the kept one
    assert store.flush() == 2
    assert store.unsent_rows == 0
    assert totals(store.query()) == {"acme": (7, 70, 7)}  # not 12
    assert len(sent) == 1


def test_usage_recorded_while_postgres_is_down_is_written_when_it_is_back(
    open_usage: Callable[..., UsageStore], pg_server: PostgresServer
) -> None:
    store, other = open_usage("a"), open_usage("b")
    record(store, 1)
    store.flush()
    pg_server.stop()
    try:
        for _ in range(3):
            record(store, 2)
            with pytest.raises(UsageUnavailableError) as down:
                store.flush()
            assert down.value.status_code == 503
        assert store.unsent_rows == 3 and store.dropped_rows == 0
    finally:
        pg_server.start()
    record(store, 1)
    assert store.flush() == 4  # three kept batches, then the new one
    assert totals(other.query()) == {"acme": (8, 80, 8)}


def test_an_outage_costs_bounded_memory_and_drops_are_counted(
    open_usage: Callable[..., UsageStore],
    pg_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_usage(max_unsent_rows=2)
    pg_server.stop()
    try:
        for tenant in ("t1", "t2", "t3", "t4"):
            record(store, 1, tenant=tenant)
            with caplog.at_level(logging.ERROR), pytest.raises(UsageUnavailableError):
                store.flush()
    finally:
        pg_server.start()
    assert store.dropped_rows == 2 and store.unsent_rows == 2
    assert "dropped 1 usage rows" in caplog.text
    store.flush()
    assert set(totals(store.query())) == {"t3", "t4"}  # the newest were kept


def test_sqlite_stays_the_default_and_keeps_a_failed_batch(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.db")
    record(store, 2)
    real_write = store.backend.write
    calls = 0

    def fail_once(batch: UsageBatch) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        real_write(batch)

    store.backend.write = fail_once  # type: ignore[method-assign]
    with pytest.raises(OSError):
        store.flush()
    assert totals(store.query()) == {"acme": (2, 20, 2)}
    store.close()


# -- two apps over HTTP ---------------------------------------------------------------


def returning(engine: FakeEngine) -> Callable[[Settings], FakeEngine]:
    return lambda _: engine


@asynccontextmanager
async def two_apps(
    kit: FakeKit, pg_url: str, folder: Path, renderer: PromptRenderer
) -> AsyncIterator[tuple[Tenanted, Tenanted]]:
    url_file = await asyncio.to_thread(write_url, folder, pg_url)
    async with AsyncExitStack() as stack:
        pair = []
        for name in ("a", "b"):
            path = folder / f"{name}.yaml"
            cfg = config(kit, folder / "shared-volume")
            cfg["shared_store"] = {"kind": "postgres", "url_file": str(url_file)}
            path.write_text(yaml.safe_dump(cfg))
            engine = FakeEngine()
            app = create_app(
                Settings.load(path), engine_factory=returning(engine), renderer=renderer,
                config_path=path,
            )  # fmt: skip
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://gw")
            )
            pair.append(Tenanted(client, engine, app.state.gateway, path))
        yield pair[0], pair[1]


async def test_usage_of_two_gateways_totals_exactly_over_http(
    pg_url: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with two_apps(fake_kit, pg_url, tmp_path / "gw", renderer) as (a, b):
        sent = {"a": 0, "b": 0}
        for gw, name, who in ((a, "a", "acme2"), (b, "b", "acme2"), (a, "a", "acme2")):
            r = await gw.chat(who, model="pirate", max_tokens=3)
            assert r.status_code == 200, r.text
            sent[name] += 1
        r = await b.chat("globex", model="robot", max_tokens=4)
        assert r.status_code == 200
        await asyncio.to_thread(b.state.usage.flush)  # b's batch written, a's still pending
        for gw in (a, b):  # either gateway answers for both
            rows = (await gw.client.get("/admin/usage", headers=bearer("admin"))).json()["data"]
            got = {(r["tenant"], r["model"]): (r["requests"], r["completion_tokens"]) for r in rows}
            assert got == {("acme", "pirate"): (3, 9), ("globex", "robot"): (1, 4)}
        assert KEYS["acme2"].key_id in {r["key_id"] for r in rows}
