"""``adapter_cache``: tenants' adapters fetched on first request, kept on disk."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import Section


class AdapterCacheSettings(Section):
    """Tenants' adapters fetched on first request from their ``adapter_source``: the
    gateway's disk cache of them (the registry's copies) and its forgetting rules."""

    disk_mib: float = Field(
        default=10240,
        gt=0,
        description="Most MiB of fetched adapters kept in registry.data_dir; past it the "
        "coldest are retired (unloaded after their last request) and deleted.",
    )
    idle_seconds: float | None = Field(
        default=86400.0, gt=0, description="A fetched adapter unused this long is dropped."
    )
    miss_ttl_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long a name the source does not hold (or an adapter it refused) "
        "is answered from memory, without asking the source again.",
    )
    miss_max_entries: int = Field(
        default=1000,
        ge=1,
        description="Bound of that memory per tenant (its oldest names go first), so one "
        "tenant asking for many unknown names never pushes out another's.",
    )
    miss_max_tenants: int = Field(
        default=256,
        ge=1,
        description="Most tenants with remembered misses; past it the memory of the tenant "
        "that missed least recently is dropped whole.",
    )
    sweep_seconds: float = Field(
        default=5.0, gt=0, description="How often idle adapters and residency are checked."
    )
