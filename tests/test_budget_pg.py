"""Spend in the PostgreSQL usage store that several gateways share (the session's real
PostgreSQL, a fresh schema per test): cost and engine seconds per row, the spend a
budget starts from, and a table made without the spend columns."""

from __future__ import annotations

import psycopg

from gateway.settings.tenancy import BudgetPeriod
from gateway.tenancy.budget import Spend
from gateway.tenancy.pg_usage import PostgresUsageBackend
from gateway.tenancy.usage import UsageStore

DAY = 1_796_601_600.0  # 2026-12-07 00:00 UTC


def record(store: UsageStore, key_id: str, now: float, cost: float = 0.5) -> None:
    store.record(
        tenant="acme",
        key_id=key_id,
        model="pirate",
        adapter="pirate",
        prompt_tokens=10,
        completion_tokens=4,
        cost=cost,
        engine_seconds=0.25,
        now=now,
    )


def test_two_gateways_spend_adds_up_in_postgres(pg_url: str) -> None:
    a = UsageStore(backend=PostgresUsageBackend(pg_url, gateway="a"))
    b = UsageStore(backend=PostgresUsageBackend(pg_url, gateway="b"))
    try:
        record(a, "k1", DAY + 60)
        record(b, "k1", DAY + 120)
        record(b, "k2", DAY - 60, cost=2.0)  # the day before
        rows = a.query(tenant="acme")  # a flushes its own; b's are not sent yet
        assert [(r.key_id, r.requests, r.cost) for r in rows] == [("k1", 1, 0.5)]
        b.flush()
        rows = a.query(tenant="acme", since=DAY)
        assert [(r.key_id, r.requests, r.cost, r.engine_seconds) for r in rows] == [
            ("k1", 2, 1.0, 0.5)
        ]
        assert a.spent(key_id="k1", since=DAY) == Spend(28, 1.0)
        assert b.spent(tenant="acme") == Spend(42, 3.0)
        assert b.spent_in(BudgetPeriod.DAY, tenant="acme", now=DAY + 3600) == Spend(28, 1.0)
        assert b.spent_in(BudgetPeriod.MONTH, key_id="k2", now=DAY + 3600) == Spend(14, 2.0)
    finally:
        a.close()
        b.close()


def test_a_usage_table_without_the_spend_columns_gets_them(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE loragate_usage (batch_id uuid NOT NULL, minute bigint NOT NULL, "
            "tenant text NOT NULL, key_id text NOT NULL, model text NOT NULL, "
            "adapter text NOT NULL, requests bigint NOT NULL, prompt_tokens bigint NOT NULL, "
            "completion_tokens bigint NOT NULL, gateway text NOT NULL, "
            "written_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (batch_id, minute, tenant, key_id, model, adapter))"
        )
        conn.execute(
            "INSERT INTO loragate_usage VALUES (gen_random_uuid(), 1, 'acme', 'k1', 'pirate', "
            "'pirate', 3, 30, 12, 'old')"
        )
    store = UsageStore(backend=PostgresUsageBackend(pg_url, gateway="a"))
    try:
        record(store, "k1", 90.0)
        [row] = store.query()
        assert (row.requests, row.prompt_tokens, row.cost) == (4, 40, 0.5)
    finally:
        store.close()
