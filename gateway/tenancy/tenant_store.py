"""``TenantStore``: tenants, keys and the audit log of the admin API, in a database.

Two backends with one SQL (``SqlTenantStore``), picked as the usage and response
stores are (``open_tenant_store``):

- ``gateway.tenancy.sqlite_tenant_store.SqliteTenantStore`` (the default): one gateway,
  ``tenants.db`` in its data folder.
- ``gateway.tenancy.pg_tenant_store.PostgresTenantStore``: every gateway that shares
  ``shared_store``.

Every change is one transaction that first bumps the store's generation counter (a
single row): on PostgreSQL that row lock serializes admin changes across gateways, on
SQLite ``BEGIN IMMEDIATE`` does. The change and its audit entry commit together, so
the audit log holds exactly the changes made, in the order they took effect, and a
gateway that sees the generation move re-reads a consistent state. The audit table is
append-only: nothing updates or deletes its rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from gateway.errors import GatewayError
from gateway.settings import SharedStoreSettings
from gateway.tenancy.managed import ManagedKey, ManagedTenancy, ManagedTenant

T = TypeVar("T")

Run = Callable[[Any], T]
"""A function of a DB-API connection (``execute(sql, params)`` returning a cursor)."""


class TenantStoreUnavailableError(GatewayError):
    """503: the store of tenants and keys did not answer.

    It extends ``gateway.errors``' tree next to ``EngineUnavailableError``::

        GatewayError
        └── TenantStoreUnavailableError  503 service_unavailable  (code: store_unavailable)
    """

    status_code: ClassVar[int] = 503
    error_type: ClassVar[str] = "service_unavailable"
    default_code: ClassVar[str | None] = "store_unavailable"


class TenantExistsError(Exception):
    """``create_tenant``: the name is taken."""


class Revocation(StrEnum):
    REVOKED = "revoked"
    ALREADY_REVOKED = "already_revoked"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    """Who: ``key:<id>`` for a hashed admin key, ``api_key`` for ``admin.api_key``."""
    action: str
    """``tenant.create``, ``tenant.update``, ``tenant.delete``, ``key.create``, ``key.revoke``."""
    tenant: str
    target: str | None
    """The key id of a key action."""
    detail: dict[str, Any]


_KEY_COLUMNS = (
    "id, tenant, name, hash, created_at, expires_at, budget, models, revoked_at, last_used_at"
)


def _key(row: Sequence[Any]) -> ManagedKey:
    budget = json.loads(row[6]) if row[6] is not None else None
    models = tuple(json.loads(row[7])) if row[7] is not None else None
    return ManagedKey(
        id=row[0],
        tenant=row[1],
        name=row[2],
        hash=row[3],
        created_at=int(row[4]),
        expires_at=int(row[5]) if row[5] is not None else None,
        budget=budget,
        models=models,
        revoked_at=row[8],
        last_used_at=row[9],
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class SqlTenantStore:
    """The store's queries, written once; a backend supplies ``_read`` and ``_write``
    (each runs a function of its connection in one transaction) and the placeholder.

    Concurrency rule: thread-safe; every call blocks (call it off the event loop).
    """

    placeholder = "?"

    def _read(self, fn: Run[T]) -> T:
        raise NotImplementedError

    def _write(self, fn: Run[T]) -> T:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _bump(self, conn: Any) -> int:
        """The first statement of every change: takes the write lock, returns the new
        generation."""
        conn.execute(self._sql("UPDATE loragate_admin_generation SET generation = generation + 1"))
        row = conn.execute("SELECT generation FROM loragate_admin_generation").fetchone()
        return int(row[0])

    def _audit(
        self,
        conn: Any,
        actor: str,
        action: str,
        tenant: str,
        target: str | None,
        detail: dict[str, Any],
        now: float,
    ) -> None:
        conn.execute(
            self._sql(
                "INSERT INTO loragate_audit (at, actor, action, tenant, target, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (now, actor, action, tenant, target, _dumps(detail)),
        )

    # -- reads ----------------------------------------------------------------------

    def generation(self) -> int:
        row = self._read(
            lambda c: c.execute("SELECT generation FROM loragate_admin_generation").fetchone()
        )
        return int(row[0])

    def snapshot(self) -> ManagedTenancy:
        """Every API tenant and live key, with the generation they belong to (one
        transaction, so the three agree)."""

        def read(conn: Any) -> ManagedTenancy:
            gen = conn.execute("SELECT generation FROM loragate_admin_generation").fetchone()
            tenants = conn.execute(
                "SELECT name, definition, version, updated_at FROM loragate_tenants"
            ).fetchall()
            keys = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM loragate_api_keys WHERE revoked_at IS NULL"
            ).fetchall()
            any_key = conn.execute("SELECT 1 FROM loragate_api_keys LIMIT 1").fetchone()
            return ManagedTenancy(
                generation=int(gen[0]),
                tenants={
                    r[0]: ManagedTenant(r[0], json.loads(r[1]), int(r[2]), r[3]) for r in tenants
                },
                keys=tuple(_key(r) for r in keys),
                has_records=bool(tenants) or any_key is not None,
            )

        return self._read(read)

    def revoked_since(self, generation: int) -> dict[str, int]:
        """The keys revoked by changes after ``generation``, with the generation of each
        revocation: one indexed query, however many keys the store holds (a gateway
        applies revocations with it before it rebuilds its whole directory)."""
        sql = self._sql("SELECT id, revoked_gen FROM loragate_api_keys WHERE revoked_gen > ?")
        rows = self._read(lambda c: c.execute(sql, (generation,)).fetchall())
        return {r[0]: int(r[1]) for r in rows}

    def list_keys(self, tenant: str) -> list[ManagedKey]:
        sql = self._sql(
            f"SELECT {_KEY_COLUMNS} FROM loragate_api_keys "
            "WHERE tenant = ? AND revoked_at IS NULL ORDER BY created_at, id"
        )
        rows = self._read(lambda c: c.execute(sql, (tenant,)).fetchall())
        return [_key(r) for r in rows]

    def get_tenant(self, name: str) -> ManagedTenant | None:
        sql = self._sql(
            "SELECT name, definition, version, updated_at FROM loragate_tenants WHERE name = ?"
        )
        row = self._read(lambda c: c.execute(sql, (name,)).fetchone())
        return ManagedTenant(row[0], json.loads(row[1]), int(row[2]), row[3]) if row else None

    def audit(self, *, limit: int, before: int | None = None) -> list[AuditEntry]:
        """The newest ``limit`` entries (older than ``before`` when given), newest first."""
        sql = "SELECT seq, at, actor, action, tenant, target, detail FROM loragate_audit"
        params: tuple[Any, ...] = ()
        if before is not None:
            sql += " WHERE seq < ?"
            params = (before,)
        sql = self._sql(sql + " ORDER BY seq DESC LIMIT ?")
        rows = self._read(lambda c: c.execute(sql, (*params, limit)).fetchall())
        return [AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    # -- changes --------------------------------------------------------------------

    def create_key(self, key: ManagedKey, actor: str) -> int:
        def write(conn: Any) -> int:
            gen = self._bump(conn)
            conn.execute(
                self._sql(
                    f"INSERT INTO loragate_api_keys ({_KEY_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)"
                ),
                (
                    key.id,
                    key.tenant,
                    key.name,
                    key.hash,
                    key.created_at,
                    key.expires_at,
                    _dumps(key.budget) if key.budget is not None else None,
                    _dumps(list(key.models)) if key.models is not None else None,
                ),
            )
            detail: dict[str, Any] = {
                "name": key.name,
                "expires_at": key.expires_at,
                "budget": key.budget,
            }
            detail["models"] = list(key.models) if key.models is not None else None
            self._audit(conn, actor, "key.create", key.tenant, key.id, detail, time.time())
            return gen

        return self._write(write)

    def revoke_key(self, tenant: str, key_id: str, actor: str) -> tuple[Revocation, int]:
        """Revoke one key of ``tenant``. A second revocation of the same key is
        audited too (``already_revoked``); another tenant's key is ``NOT_FOUND``."""

        def write(conn: Any) -> tuple[Revocation, int]:
            gen = self._bump(conn)
            sql = self._sql("SELECT revoked_at FROM loragate_api_keys WHERE id = ? AND tenant = ?")
            row = conn.execute(sql, (key_id, tenant)).fetchone()
            if row is None:
                return Revocation.NOT_FOUND, gen
            now = time.time()
            outcome = Revocation.ALREADY_REVOKED if row[0] is not None else Revocation.REVOKED
            if outcome is Revocation.REVOKED:
                conn.execute(
                    self._sql(
                        "UPDATE loragate_api_keys SET revoked_at = ?, revoked_gen = ? WHERE id = ?"
                    ),
                    (now, gen, key_id),
                )
            self._audit(conn, actor, "key.revoke", tenant, key_id, {"outcome": outcome}, now)
            return outcome, gen

        return self._write(write)

    def create_tenant(self, name: str, definition: dict[str, Any], actor: str) -> ManagedTenant:
        def write(conn: Any) -> ManagedTenant:
            self._bump(conn)
            exists = conn.execute(
                self._sql("SELECT 1 FROM loragate_tenants WHERE name = ?"), (name,)
            ).fetchone()
            if exists is not None:
                raise TenantExistsError(name)
            now = time.time()
            conn.execute(
                self._sql(
                    "INSERT INTO loragate_tenants (name, definition, version, updated_at) "
                    "VALUES (?, ?, 1, ?)"
                ),
                (name, _dumps(definition), now),
            )
            # Field names only: a policy's text goes into prompts, never into a log.
            detail = {"fields": sorted(definition), "version": 1}
            self._audit(conn, actor, "tenant.create", name, None, detail, now)
            return ManagedTenant(name, definition, 1, now)

        return self._write(write)

    def update_tenant(
        self,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        actor: str,
        audit_detail: dict[str, Any],
    ) -> ManagedTenant | None:
        """Apply ``change`` to the stored definition under the write lock (it may raise
        to refuse: nothing is written). None: no such tenant."""

        def write(conn: Any) -> ManagedTenant | None:
            self._bump(conn)
            sql = self._sql("SELECT definition, version FROM loragate_tenants WHERE name = ?")
            row = conn.execute(sql, (name,)).fetchone()
            if row is None:
                return None
            definition = change(json.loads(row[0]))
            version, now = int(row[1]) + 1, time.time()
            conn.execute(
                self._sql(
                    "UPDATE loragate_tenants SET definition = ?, version = ?, updated_at = ? "
                    "WHERE name = ?"
                ),
                (_dumps(definition), version, now, name),
            )
            detail = {**audit_detail, "version": version}
            self._audit(conn, actor, "tenant.update", name, None, detail, now)
            return ManagedTenant(name, definition, version, now)

        return self._write(write)

    def delete_tenant(self, name: str, actor: str) -> list[str] | None:
        """Delete an API tenant and revoke its keys (their ids returned); None: none."""

        def write(conn: Any) -> list[str] | None:
            gen = self._bump(conn)
            sql = self._sql("DELETE FROM loragate_tenants WHERE name = ?")
            if conn.execute(sql, (name,)).rowcount == 0:
                return None
            now = time.time()
            live = self._sql(
                "SELECT id FROM loragate_api_keys WHERE tenant = ? AND revoked_at IS NULL"
            )
            ids = sorted(r[0] for r in conn.execute(live, (name,)).fetchall())
            conn.execute(
                self._sql(
                    "UPDATE loragate_api_keys SET revoked_at = ?, revoked_gen = ? "
                    "WHERE tenant = ? AND revoked_at IS NULL"
                ),
                (now, gen, name),
            )
            self._audit(conn, actor, "tenant.delete", name, None, {"revoked_keys": ids}, now)
            return ids

        return self._write(write)

    def record(self, actor: str, action: str, target: str | None, detail: dict[str, Any]) -> None:
        """Audit an admin change that is not a tenant's (e.g. ``adapter.split``): the
        ``tenant`` column is empty; the admin generation does not move."""

        def write(conn: Any) -> None:
            self._audit(conn, actor, action, "", target, detail, time.time())

        self._write(write)

    def touch_keys(self, used: dict[str, float]) -> None:
        """Record when keys were last used (one batch; never moves a time back)."""
        if not used:
            return
        sql = self._sql(
            "UPDATE loragate_api_keys SET last_used_at = ? "
            "WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)"
        )
        params = [(at, key_id, at) for key_id, at in sorted(used.items())]

        def write(conn: Any) -> None:
            conn.cursor().executemany(sql, params)

        self._write(write)


def open_tenant_store(shared: SharedStoreSettings, data_dir: Path) -> SqlTenantStore:
    """SQLite in the data folder, or the PostgreSQL every gateway shares (connects now)."""
    if shared.kind == "postgres":
        from gateway.tenancy.pg_tenant_store import PostgresTenantStore

        return PostgresTenantStore(shared.url(), timeout=shared.timeout)
    from gateway.tenancy.sqlite_tenant_store import SqliteTenantStore, tenant_db_path

    return SqliteTenantStore(tenant_db_path(data_dir))
