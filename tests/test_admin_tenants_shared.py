"""Two gateways on one real PostgreSQL (``tests/support/postgres_fixtures``): a key made on one
works on the other, a revocation on one gets 401 on the other within 5 s, and two
revocations or edits of one tenant at once, one on each gateway, leave one consistent
state with both in the audit log. The stores themselves under many threads at once,
PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from gateway.tenancy.managed import ManagedKey
from gateway.tenancy.pg_tenant_store import PostgresTenantStore
from gateway.tenancy.sqlite_tenant_store import SqliteTenantStore
from gateway.tenancy.tenant_store import Revocation
from tests.conftest import FakeKit
from tests.support.postgres_fixtures import PostgresServer, write_url
from tests.support.tenant_admin_support import (
    ADMIN,
    Gateway,
    tenant_config,
    two_gateways,
    write_config,
)

PROPAGATION_BOUND_S = 5.0


async def within(seconds: float, check: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until ``check`` holds; fails past ``seconds``."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_a_revocation_reaches_the_other_gateway_within_5_s(
    pg_url: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with two_gateways(fake_kit, pg_url, tmp_path, renderer) as (a, b):
        made = await a.new_key("acme")
        assert (await a.chat(made["key"])).status_code == 200  # at once where it was made

        async def b_accepts() -> bool:
            return (await b.chat(made["key"])).status_code == 200

        await within(PROPAGATION_BOUND_S, b_accepts)
        r = await a.client.delete(f"/admin/tenants/acme/keys/{made['id']}", headers=ADMIN)
        assert r.status_code == 200
        assert (await a.chat(made["key"])).status_code == 401  # at once here

        async def b_refuses() -> bool:
            return (await b.chat(made["key"])).status_code == 401

        took = await within(PROPAGATION_BOUND_S, b_refuses)
        assert took <= b.state.settings.shared_store.refresh_seconds * 4 + 1


async def test_tenants_made_on_one_gateway_serve_on_the_other(
    pg_url: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with two_gateways(fake_kit, pg_url, tmp_path, renderer) as (a, b):
        r = await a.client.post(
            "/admin/tenants", json={"name": "globex", "models": ["robot"]}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        key = (await b.new_key("globex"))["key"]  # b sees the tenant as soon as it answers
        assert (await b.chat(key, model="robot")).status_code == 200

        async def a_serves() -> bool:
            return (await a.chat(key, model="robot")).status_code == 200

        await within(PROPAGATION_BOUND_S, a_serves)
        listed = (await a.client.get("/admin/tenants/globex/keys", headers=ADMIN)).json()
        assert [k["id"] for k in listed["data"]] == [key.split("-")[1]]


async def test_concurrent_revocations_and_edits_on_two_gateways(
    pg_url: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with two_gateways(fake_kit, pg_url, tmp_path, renderer) as (a, b):
        made = await a.new_key("acme")
        path = f"/admin/tenants/acme/keys/{made['id']}"
        answers = await asyncio.gather(
            a.client.delete(path, headers=ADMIN), b.client.delete(path, headers=ADMIN)
        )
        assert [r.status_code for r in answers] == [200, 200]
        revokes = [e for e in await b.audit() if e["action"] == "key.revoke"]
        assert sorted(e["detail"]["outcome"] for e in revokes) == ["already_revoked", "revoked"]
        for gw in (a, b):
            assert (await gw.chat(made["key"])).status_code == 401

        await a.client.post("/admin/tenants", json={"name": "globex"}, headers=ADMIN)
        edits = [
            (a, {"weight": 3}),
            (b, {"collections": ["docs"]}),
            (a, {"max_in_flight": 2}),
            (b, {"models": ["robot"]}),
        ]
        edited = await asyncio.gather(
            *(gw.client.patch("/admin/tenants/globex", json=e, headers=ADMIN) for gw, e in edits)
        )
        assert [r.status_code for r in edited] == [200] * 4
        expected = (3, ["docs"], 2, ["robot"])
        for gw in (a, b):

            async def settled(gw: Gateway = gw) -> bool:
                t = (await gw.client.get("/admin/tenants/globex", headers=ADMIN)).json()
                return (t["weight"], t["collections"], t["max_in_flight"], t["models"]) == expected

            await within(PROPAGATION_BOUND_S, settled)
        updates = [e for e in await a.audit() if e["action"] == "tenant.update"]
        assert sorted(e["detail"]["version"] for e in updates) == [2, 3, 4, 5]


def adding(field: str, value: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda definition: {**definition, field: value}


def test_the_store_serializes_changes_from_many_threads(pg_url: str) -> None:
    """Eight connections (gateways) revoke one key and edit one tenant at once."""
    stores = [PostgresTenantStore(pg_url, timeout=10) for _ in range(8)]
    try:
        new = generate_key()
        stores[0].create_tenant("t", {"weight": 1.0}, "test")
        stores[0].create_key(ManagedKey(new.key_id, "t", "k", new.hash, 0), "test")

        def work(i: int) -> Revocation:
            store = stores[i]
            store.update_tenant("t", adding(f"n{i}", i), f"gw{i}", {"fields": [f"n{i}"]})
            return store.revoke_key("t", new.key_id, f"gw{i}")[0]

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(work, range(8)))
        assert sorted(outcomes).count(Revocation.REVOKED) == 1
        tenant = stores[1].get_tenant("t")
        assert tenant is not None and tenant.version == 9
        assert {f"n{i}" for i in range(8)} <= set(tenant.definition)  # no edit lost
        entries = stores[2].audit(limit=100)
        assert len([e for e in entries if e.action == "tenant.update"]) == 8
        assert len([e for e in entries if e.action == "key.revoke"]) == 8
        seqs = [e.seq for e in entries]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
        assert stores[3].generation() == 2 + 16
    finally:
        for store in stores:
            store.close()


def test_the_sqlite_store_serializes_changes_from_many_threads(tmp_path: Path) -> None:
    """Four connections to one file (``loragate config check`` reads it too)."""
    stores = [SqliteTenantStore(tmp_path / "tenants.db") for _ in range(4)]
    try:
        new = generate_key()
        stores[0].create_tenant("t", {}, "test")
        stores[0].create_key(ManagedKey(new.key_id, "t", "k", new.hash, 0), "test")

        def work(i: int) -> Revocation:
            stores[i % 4].update_tenant("t", adding(f"n{i}", i), "gw", {})
            return stores[i % 4].revoke_key("t", new.key_id, "gw")[0]

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(work, range(8)))
        assert outcomes.count(Revocation.REVOKED) == 1
        tenant = stores[1].get_tenant("t")
        assert tenant is not None and tenant.version == 9
        assert {f"n{i}" for i in range(8)} <= set(tenant.definition)
    finally:
        for store in stores:
            store.close()


async def test_postgresql_down_is_a_503_and_keys_keep_serving(
    pg_url: str,
    pg_server: PostgresServer,
    fake_kit: FakeKit,
    tmp_path: Path,
    renderer: PromptRenderer,
) -> None:
    async with two_gateways(fake_kit, pg_url, tmp_path, renderer) as (a, _):
        made = await a.new_key("acme")
        await asyncio.to_thread(pg_server.stop)
        try:
            r = await a.client.post(
                "/admin/tenants/acme/keys", json={"name": "down"}, headers=ADMIN
            )
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "store_unavailable"
            assert "postgresql://" not in r.text  # the URL (a secret) is never shown
            assert (await a.chat(made["key"])).status_code == 200  # served from memory
        finally:
            await asyncio.to_thread(pg_server.start)
        assert (await a.new_key("acme", name="back"))["name"] == "back"


def test_config_check_reads_the_shared_store(
    pg_url: str, fake_kit: FakeKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = PostgresTenantStore(pg_url)
    try:
        store.create_tenant("globex", {"models": ["robot"]}, "test")
    finally:
        store.close()
    url_file = write_url(tmp_path / "secret", pg_url)
    shared = {"kind": "postgres", "url_file": str(url_file)}
    path = write_config(
        tmp_path / "cfg", tenant_config(fake_kit, tmp_path / "data", shared_store=shared)
    )
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "the shared PostgreSQL (shared_store)" in out
    assert "globex: api, 0 file key(s) + 0 API key(s), models robot" in out
    assert pg_url not in out
