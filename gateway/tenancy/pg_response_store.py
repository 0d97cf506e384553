"""``PostgresResponseStore``: stored responses of every gateway in one PostgreSQL table.

Any gateway behind the same load balancer can then retrieve, delete or continue
(``previous_response_id``) a response another one created. Same rules as
``SqliteResponseStore``: every read names the owner, expired rows are never returned.
"""

from __future__ import annotations

import time
from typing import Any

from adapters.common.pg_connection import PostgresConnection
from gateway.tenancy.response_store import (
    PURGE_EVERY_SECONDS,
    ResponseStoreUnavailableError,
    StoredResponse,
)

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS loragate_responses (
        id text PRIMARY KEY,
        owner text NOT NULL,
        created_at double precision NOT NULL,
        expires_at double precision NOT NULL,
        body text NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS loragate_responses_expiry ON loragate_responses (expires_at)",
)

UPSERT = """
INSERT INTO loragate_responses (id, owner, created_at, expires_at, body)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at
WHERE loragate_responses.owner = excluded.owner
"""


class PostgresResponseStore:
    """Concurrency rule: thread-safe (one ``PostgresConnection``); every call blocks."""

    def __init__(self, url: str, *, retention_seconds: float, timeout: float = 5.0) -> None:
        self._retention = retention_seconds
        self._purged_at = 0.0
        self._db = PostgresConnection(
            url,
            timeout=timeout,
            schema=SCHEMA,
            unavailable=ResponseStoreUnavailableError,
            what="response store",
        )
        self._db.run(lambda conn: None)  # connect now: a wrong URL fails at start-up

    def put(self, record: StoredResponse) -> None:
        if time.time() - self._purged_at >= PURGE_EVERY_SECONDS:
            self.purge()
        params = (
            record.id,
            record.owner,
            record.created_at,
            record.created_at + self._retention,
            record.body(),
        )
        self._db.run(lambda conn: conn.execute(UPSERT, params))  # idempotent: keyed by id

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        sql = (
            "SELECT created_at, body FROM loragate_responses "
            "WHERE id = %s AND owner = %s AND expires_at > %s"
        )
        params = (response_id, owner, time.time())
        row: Any = self._db.run(lambda conn: conn.execute(sql, params).fetchone())
        return None if row is None else StoredResponse.from_row(response_id, owner, *row)

    def delete(self, owner: str, response_id: str) -> bool:
        sql = "DELETE FROM loragate_responses WHERE id = %s AND owner = %s AND expires_at > %s"
        params = (response_id, owner, time.time())
        return bool(self._db.run(lambda conn: conn.execute(sql, params).rowcount))

    def purge(self) -> int:
        now = time.time()
        self._purged_at = now
        sql = "DELETE FROM loragate_responses WHERE expires_at <= %s"
        return int(self._db.run(lambda conn: conn.execute(sql, (now,)).rowcount))

    def close(self) -> None:
        self._db.close()
