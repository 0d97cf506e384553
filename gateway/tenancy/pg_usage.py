"""``PostgresUsageBackend``: the usage of every gateway in one PostgreSQL table.

Each row is one (batch, minute, tenant, key, model, adapter) and its primary key holds
the batch id, so a batch is inserted at most once: when a commit succeeded but its
acknowledgement was lost (network cut, gateway timeout), the gateway sends the same
batch again and ``ON CONFLICT DO NOTHING`` ignores it. Queries sum over all batches of
all gateways. Commits are durable (WAL, fsync) before ``write`` returns.
"""

from __future__ import annotations

from typing import Any

from adapters.common.pg_connection import PostgresConnection
from gateway.tenancy.budget import Spend
from gateway.tenancy.usage import (
    UsageBatch,
    UsagePoint,
    UsageRow,
    UsageUnavailableError,
    spent_query,
    usage_query,
)

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS loragate_usage (
        batch_id uuid NOT NULL,
        minute bigint NOT NULL,
        tenant text NOT NULL,
        key_id text NOT NULL,
        model text NOT NULL,
        adapter text NOT NULL,
        requests bigint NOT NULL,
        prompt_tokens bigint NOT NULL,
        completion_tokens bigint NOT NULL,
        cost double precision NOT NULL DEFAULT 0,
        engine_seconds double precision NOT NULL DEFAULT 0,
        gateway text NOT NULL,
        written_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (batch_id, minute, tenant, key_id, model, adapter)
    )
    """,
    "CREATE INDEX IF NOT EXISTS loragate_usage_by_minute ON loragate_usage (minute, tenant)",
    # A table that lacks the spend columns gets them (a no-op on one made above).
    "ALTER TABLE loragate_usage ADD COLUMN IF NOT EXISTS cost double precision NOT NULL DEFAULT 0",
    "ALTER TABLE loragate_usage ADD COLUMN IF NOT EXISTS engine_seconds double precision "
    "NOT NULL DEFAULT 0",
)

INSERT = """
INSERT INTO loragate_usage (batch_id, minute, tenant, key_id, model, adapter, requests,
    prompt_tokens, completion_tokens, cost, engine_seconds, gateway)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""


class PostgresUsageBackend:
    """Usage batches in PostgreSQL, shared by every gateway that names the same database.

    Concurrency rule: thread-safe (one ``PostgresConnection``, which reconnects by
    itself); ``UsageStore`` calls it from one flush at a time, off the event loop.
    Every failure to reach the database is ``UsageUnavailableError``.
    """

    def __init__(self, url: str, *, gateway: str, timeout: float = 5.0) -> None:
        self._gateway = gateway
        self._db = PostgresConnection(
            url,
            timeout=timeout,
            schema=SCHEMA,
            unavailable=UsageUnavailableError,
            what="usage store",
        )
        self._db.run(lambda conn: None)  # connect now: a wrong URL fails at start-up

    def write(self, batch: UsageBatch) -> None:
        params = [(batch.id, *key, *values, self._gateway) for key, values in batch.rows.items()]

        def insert(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(INSERT, params)

        self._db.run(insert)  # retried once if cut off: the batch id makes it idempotent

    def query(self, tenant: str | None, since_minute: int) -> list[UsageRow]:
        sql, params = usage_query("loragate_usage", "%s", tenant, since_minute)
        rows = self._db.run(lambda c: c.execute(sql, params).fetchall())
        return [UsageRow.from_db(row) for row in rows]

    def series(
        self, tenant: str | None, since_minute: int, bucket_minutes: int
    ) -> list[UsagePoint]:
        sql, params = usage_query("loragate_usage", "%s", tenant, since_minute, bucket_minutes)
        rows = self._db.run(lambda c: c.execute(sql, params).fetchall())
        return [UsagePoint.from_db(row) for row in rows]

    def spent(self, tenant: str | None, key_id: str | None, since_minute: int) -> Spend:
        sql, params = spent_query("loragate_usage", "%s", tenant, key_id, since_minute)
        tokens, cost = self._db.run(lambda c: c.execute(sql, params).fetchone())
        return Spend(int(tokens), float(cost))

    def close(self) -> None:
        self._db.close()
