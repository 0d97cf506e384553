"""The tenants a gateway serves, as ``loragate config check`` shows them: the config
file's and the admin API store's, merged as the gateway merges them (the file wins)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.errors import GatewayError
from gateway.settings import Settings
from gateway.settings.tenancy import TenancyConfig
from gateway.tenancy.managed import EMPTY, ManagedTenancy, merge
from gateway.tenancy.sqlite_tenant_store import SqliteTenantStore, tenant_db_path
from gateway.tenancy.tenant_store import SqlTenantStore


def read_managed(settings: Settings) -> tuple[ManagedTenancy | None, str]:
    """The store's tenants and keys (None: it could not be read) and a line saying
    which store that is, or why it was not read."""
    shared = settings.shared_store
    store: SqlTenantStore
    if shared.kind == "postgres":
        from gateway.tenancy.pg_tenant_store import PostgresTenantStore

        where = "the shared PostgreSQL (shared_store)"
        try:
            store = PostgresTenantStore(shared.url(), timeout=shared.timeout)
        except (GatewayError, ValueError, OSError) as exc:
            return None, f"{where}: not read ({exc})"
    else:
        path: Path = tenant_db_path(settings.registry.data_dir)
        where = str(path)
        if not path.exists():
            return EMPTY, f"{where} (none yet)"
        try:
            store = SqliteTenantStore(path, create=False)
        except (sqlite3.Error, OSError) as exc:  # say so, show the file's view
            return None, f"{where}: not read ({exc})"
    try:
        return store.snapshot(), where
    # GatewayError: PostgreSQL out of reach; ValueError: rows that fail validation
    except (GatewayError, sqlite3.Error, OSError, ValueError) as exc:
        return None, f"{where}: not read ({exc})"
    finally:
        store.close()


def merged_lines(file: TenancyConfig, managed: ManagedTenancy) -> list[str]:
    """One line per tenant served: where it is defined, its keys, its models."""
    merged, rules = merge(file, managed)
    lines = []
    for name, tenant in sorted(merged.tenants.items()):
        source = "config" if name in file.tenants else "api"
        api_keys = sum(1 for k in tenant.keys if k.id in rules)
        note = ""
        if name in file.tenants and name in managed.tenants:
            note = " (its admin API definition is shadowed: the file wins)"
        models = ", ".join(tenant.models) or "-"
        lines.append(
            f"  {name}: {source}, {len(tenant.keys) - api_keys} file key(s) + {api_keys} API "
            f"key(s), models {models}{note}"
        )
    left_out = sorted(set(managed.tenants) - set(merged.tenants))
    if left_out:
        lines.append(f"  left out (no longer valid against this file): {', '.join(left_out)}")
    orphans = sum(1 for k in managed.keys if k.tenant not in merged.tenants)
    if orphans:
        lines.append(f"  {orphans} API key(s) of tenants that no longer exist (they serve nothing)")
    return lines
