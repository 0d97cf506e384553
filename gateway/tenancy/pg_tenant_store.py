"""``PostgresTenantStore``: the admin API's tenants, keys and audit log in PostgreSQL,
shared by every gateway that names the same database (``shared_store``).

The queries are ``SqlTenantStore``'s. A change is one transaction whose first statement
updates the single generation row: that row lock orders the changes of every gateway,
so two revocations or edits of one tenant at once apply one after the other. Reads run
in a ``REPEATABLE READ`` transaction, so a snapshot's tenants, keys and generation
agree.
"""

from __future__ import annotations

from typing import Any

from adapters.common.pg_connection import PostgresConnection
from gateway.tenancy.tenant_store import Run, SqlTenantStore, T, TenantStoreUnavailableError

SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS loragate_api_keys (
        id text PRIMARY KEY, tenant text NOT NULL, name text NOT NULL, hash text NOT NULL,
        created_at bigint NOT NULL, expires_at bigint, budget text, models text,
        revoked_at double precision, last_used_at double precision, revoked_gen bigint
    )
    """,
    "CREATE INDEX IF NOT EXISTS loragate_api_keys_tenant ON loragate_api_keys (tenant)",
    "CREATE INDEX IF NOT EXISTS loragate_api_keys_revoked ON loragate_api_keys (revoked_gen)",
    """
    CREATE TABLE IF NOT EXISTS loragate_tenants (
        name text PRIMARY KEY, definition text NOT NULL, version bigint NOT NULL,
        updated_at double precision NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS loragate_audit (
        seq bigserial PRIMARY KEY, at double precision NOT NULL, actor text NOT NULL,
        action text NOT NULL, tenant text NOT NULL, target text, detail text NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS loragate_admin_generation (
        one boolean PRIMARY KEY DEFAULT true CHECK (one), generation bigint NOT NULL
    )
    """,
    "INSERT INTO loragate_admin_generation (generation) VALUES (0) ON CONFLICT DO NOTHING",
)


class PostgresTenantStore(SqlTenantStore):
    """Concurrency rule: thread-safe (one ``PostgresConnection``); every call blocks.
    A change is never retried on a new connection (its outcome would be unknown)."""

    placeholder = "%s"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._db = PostgresConnection(
            url,
            timeout=timeout,
            schema=SCHEMA,
            unavailable=TenantStoreUnavailableError,
            what="tenant store",
        )
        self._db.run(lambda conn: None)  # connect now: a wrong URL fails at start-up

    def _read(self, fn: Run[T]) -> T:
        def read(conn: Any) -> T:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return fn(conn)

        return self._db.run(read)

    def _write(self, fn: Run[T]) -> T:
        def write(conn: Any) -> T:
            with conn.transaction():
                return fn(conn)

        return self._db.run(write, idempotent=False)

    def close(self) -> None:
        self._db.close()
