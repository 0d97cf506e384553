"""What ``OnDemandAdapters`` tells operators: per-tier counts, in ``/admin/adapters``
(``OnDemandReport``) and in Prometheus (``OnDemandMetrics``, on the gateway's registry)."""

from __future__ import annotations

from collections import Counter as Tally
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, Field

from adapters.manifest import AdapterEntry
from gateway.engine.interface import AdapterResidency
from gateway.model_catalog import source_owner

FETCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 20, 40, 80)


class Tier(StrEnum):
    """Where a tenant's adapter was when a request named it, or why it was not served."""

    GPU_SLOT = "gpu_slot"
    CPU_CACHE = "cpu_cache"
    DISK = "disk"
    SOURCE = "source"
    MISSING = "missing"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"


SERVED = (Tier.GPU_SLOT, Tier.CPU_CACHE, Tier.DISK, Tier.SOURCE)


class OnDemandMetrics:
    """Prometheus series of adapters fetched on first request (labels pre-initialised)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "loragate_adapter_tier_requests",
            "Requests for adapters of tenants' sources, by the tier that held the adapter "
            "(source: fetched for the request) or why none served it.",
            ["tier"],
            registry=r,
        )
        for tier in Tier:
            self.requests.labels(tier=tier.value)
        self.lookups = Counter(
            "loragate_adapter_source_lookups",
            "Names looked up in tenants' adapter sources, by result.",
            ["result"],
            registry=r,
        )
        for result in ("held", "missing", "error"):
            self.lookups.labels(result=result)
        self.fetch_seconds = Histogram(
            "loragate_adapter_fetch_seconds",
            "Fetch, validation, registration and engine load of an adapter from a source.",
            buckets=FETCH_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "loragate_adapter_evictions",
            "Fetched adapters dropped from the disk cache, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in ("disk", "quota", "idle"):
            self.evictions.labels(reason=reason)
        self.disk_bytes = Gauge(
            "loragate_adapter_disk_cache_bytes", "Bytes of fetched adapters on disk.", registry=r
        )
        self.disk_adapters = Gauge(
            "loragate_adapter_disk_cache_adapters", "Fetched adapters on disk.", registry=r
        )


class TenantCache(BaseModel):
    adapters: int
    bytes: int


class OnDemandReport(BaseModel):
    """Adapters fetched from tenants' sources: tiers, hit rates, the disk cache."""

    requests: dict[str, int] = Field(
        description="Requests by the tier that held the adapter (gpu_slot, cpu_cache, disk, "
        "source) or why none served it (missing, refused, unavailable)."
    )
    hit_rates: dict[str, float] = Field(
        description="Share of served requests per tier (gpu_slot, cpu_cache, disk, source)."
    )
    resident: dict[str, int] = Field(
        description="Fetched adapters per tier now (engine snapshot of the last sweep)."
    )
    disk_cache_bytes: int
    disk_cache_limit_bytes: int
    tenants: dict[str, TenantCache]
    remembered_misses: int = Field(description="Names answered 404 from memory for a while.")
    miss_tenants: int = Field(
        default=0, description="Tenants with remembered misses (each its own bounded memory)."
    )
    fetching: int = Field(description="Fetches running now.")

    @classmethod
    def build(
        cls,
        *,
        tiers: Tally[Tier],
        cached: list[AdapterEntry],
        limit_bytes: int,
        residency: AdapterResidency,
        remembered_misses: int,
        fetching: int,
        miss_tenants: int = 0,
    ) -> OnDemandReport:
        served = sum(tiers[t] for t in SERVED)
        tenants: dict[str, TenantCache] = {}
        for entry in cached:
            owner = source_owner(entry) or ""
            now = tenants.get(owner, TenantCache(adapters=0, bytes=0))
            tenants[owner] = TenantCache(
                adapters=now.adapters + 1, bytes=now.bytes + entry.size_bytes
            )
        slots = residency.slots or frozenset()
        ids = [e.lora_int_id for e in cached]
        in_slots = sum(1 for i in ids if i in slots)
        loaded = sum(1 for i in ids if i in residency.loaded)
        return cls(
            requests={t.value: tiers[t] for t in Tier},
            hit_rates={t.value: (tiers[t] / served if served else 0.0) for t in SERVED},
            resident={
                Tier.GPU_SLOT.value: in_slots,
                Tier.CPU_CACHE.value: loaded - in_slots,
                Tier.DISK.value: len(ids) - loaded,
            },
            disk_cache_bytes=sum(e.size_bytes for e in cached),
            disk_cache_limit_bytes=limit_bytes,
            tenants=tenants,
            remembered_misses=remembered_misses,
            miss_tenants=miss_tenants,
            fetching=fetching,
        )
