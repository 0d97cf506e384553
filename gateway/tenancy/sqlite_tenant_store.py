"""``SqliteTenantStore``: the admin API's tenants, keys and audit log in a SQLite file
(``tenants.db`` in the data folder) for a gateway on its own. The queries are
``SqlTenantStore``'s; ``BEGIN IMMEDIATE`` makes each change exclusive."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from gateway.tenancy.tenant_store import Run, SqlTenantStore, T, TenantStoreUnavailableError

SQLITE_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS loragate_api_keys (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, hash TEXT NOT NULL,
        created_at INTEGER NOT NULL, expires_at INTEGER, budget TEXT, models TEXT,
        revoked_at REAL, last_used_at REAL, revoked_gen INTEGER
    )
    """,
    "CREATE INDEX IF NOT EXISTS loragate_api_keys_tenant ON loragate_api_keys (tenant)",
    "CREATE INDEX IF NOT EXISTS loragate_api_keys_revoked ON loragate_api_keys (revoked_gen)",
    """
    CREATE TABLE IF NOT EXISTS loragate_tenants (
        name TEXT PRIMARY KEY, definition TEXT NOT NULL, version INTEGER NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS loragate_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, tenant TEXT NOT NULL, target TEXT, detail TEXT NOT NULL
    )
    """,
    "CREATE TABLE IF NOT EXISTS loragate_admin_generation (generation INTEGER NOT NULL)",
    """
    INSERT INTO loragate_admin_generation (generation)
    SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM loragate_admin_generation)
    """,
)


class SqliteTenantStore(SqlTenantStore):
    """One gateway: a SQLite file. ``BEGIN IMMEDIATE`` makes each change exclusive
    (other processes reading the file, ``loragate config check``, see whole changes)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        uri = path.resolve().as_uri() + ("" if create else "?mode=ro")
        self._conn = sqlite3.connect(
            uri, uri=True, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._lock = threading.Lock()
        if create:
            with self._lock:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("BEGIN IMMEDIATE")
                for statement in SQLITE_SCHEMA:
                    self._conn.execute(statement)
                self._conn.execute("COMMIT")

    def _run(self, fn: Run[T], begin: str) -> T:
        with self._lock:
            try:
                self._conn.execute(begin)
            except sqlite3.Error as exc:
                raise TenantStoreUnavailableError(
                    f"The tenant store is unavailable: {exc}"
                ) from None
            try:
                result = fn(self._conn)
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # locked past the timeout, disk full
                self._conn.execute("ROLLBACK")
                raise TenantStoreUnavailableError(
                    f"The tenant store is unavailable: {exc}"
                ) from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return result

    def _read(self, fn: Run[T]) -> T:
        return self._run(fn, "BEGIN")

    def _write(self, fn: Run[T]) -> T:
        return self._run(fn, "BEGIN IMMEDIATE")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def tenant_db_path(data_dir: Path) -> Path:
    return data_dir / "tenants.db"
