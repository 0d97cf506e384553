"""The registry's state store as ``shared_store`` configures it (several gateways)."""

from __future__ import annotations

from typing import Any

from adapters.pg_registry_state import PostgresStateStore
from gateway.settings import SharedStoreSettings


def registry_store_options(settings: SharedStoreSettings) -> dict[str, Any]:
    """Keyword arguments for ``AdapterRegistry``: none for one gateway (its own file),
    a PostgreSQL state store and the refresh interval for several. Blocking: connects,
    so an unreachable PostgreSQL fails the start-up with ``RegistryUnavailableError``."""
    if settings.kind != "postgres":
        return {}
    store = PostgresStateStore(settings.url(), timeout=settings.timeout)
    return {"state_store": store, "refresh_seconds": settings.refresh_seconds}


def settle_seconds(settings: SharedStoreSettings) -> float:
    """How long a retired version stays loaded after this gateway's drain: long enough
    for every other gateway to have re-read the registry and stopped resolving it."""
    return 2 * settings.refresh_seconds + settings.timeout if settings.kind == "postgres" else 0.0
