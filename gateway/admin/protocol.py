"""Request and response models of ``/admin/adapters``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from adapters.manifest import AdapterEntry, AdapterStatus
from adapters.traffic_split import RollbackBounds, ShadowConfig, SplitOptions, TrafficSplit
from gateway.adapter_runtime.inflight import InFlightTracker
from gateway.adapter_runtime.on_demand_report import OnDemandReport
from gateway.adapter_runtime.residency import Residency, residency_of
from gateway.engine.interface import AdapterResidency
from gateway.pipeline.shadow_log import ShadowEntry
from gateway.protocol.common import AdminRequest


class RegisterAdapterRequest(AdminRequest):
    """JSON registration: exactly one of ``path`` (on the gateway's machine) or ``uri``."""

    name: str = Field(description="Adapter name: [a-z0-9][a-z0-9._-]{0,63}.")
    version: str | None = Field(default=None, description="Default: the next free v<n>.")
    path: str | None = Field(
        default=None, description="Adapter folder under one of registry.allowed_roots."
    )
    uri: str | None = Field(
        default=None, description="fsspec URI of an adapter folder or .zip/.tar.gz archive."
    )
    activate: bool | None = Field(
        default=None,
        description="true: serve it for `name` now; false: only as name@version; "
        "null: only if `name` has no active version yet.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> RegisterAdapterRequest:
        if (self.path is None) == (self.uri is None):
            raise ValueError("give exactly one of 'path' or 'uri'")
        return self


class ActivateRequest(AdminRequest):
    version: str


class SplitRequest(AdminRequest):
    """``PUT /admin/adapters/{name}/split``: the traffic split between versions."""

    weights: dict[str, int] = Field(
        description="version -> integer weight (percent); 2 or more versions (one is "
        "enough with a shadow), sum 100. Each caller (the request's `user`, else its API "
        "key) sticks to one version."
    )
    shadow: ShadowConfig | None = Field(
        default=None,
        description="Send `percent` of the requests to `version` as well; the caller only "
        "sees the version its bucket chose.",
    )
    rollback: RollbackBounds | None = Field(
        default=None,
        description="End the split by itself when a canary's error rate or latency "
        "(against the active version) passes these bounds.",
    )

    def options(self) -> SplitOptions:
        return SplitOptions(shadow=self.shadow, rollback=self.rollback)


class VersionRequest(AdminRequest):
    version: str | None = Field(default=None, description="Default: the active version.")


class AdapterVersionInfo(BaseModel):
    """One version, with where its weights are and how much it was used."""

    ref: str = Field(description="name@version; usable as `model` in requests.")
    version: str
    status: AdapterStatus
    lora_id: int = Field(description="The engine's LoRA id: unique, never reused.")
    pinned: bool
    residency: Residency
    in_flight: int = Field(description="Requests on this version in the engine now.")
    requests_total: int = Field(description="Requests served by this version since start-up.")
    source: str
    sha256: str
    base_model: str | None
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    created_at: datetime
    replicas: list[str] | None = Field(
        default=None,
        description="Remote mode: the replicas (URLs) this version is registered on.",
    )

    @classmethod
    def build(
        cls, entry: AdapterEntry, stats: AdapterResidency, tracker: InFlightTracker
    ) -> AdapterVersionInfo:
        return cls(
            ref=entry.ref,
            version=entry.version,
            status=entry.status,
            lora_id=entry.lora_int_id,
            pinned=entry.pinned,
            residency=residency_of(entry.lora_int_id, stats),
            in_flight=tracker.running(entry.lora_int_id),
            requests_total=tracker.served(entry.lora_int_id),
            source=entry.source,
            sha256=entry.sha256,
            base_model=entry.base_model,
            rank=entry.rank,
            alpha=entry.alpha,
            target_modules=list(entry.target_modules),
            size_bytes=entry.size_bytes,
            created_at=entry.created_at,
            replicas=None
            if stats.replicas is None
            else sorted(url for url, ids in stats.replicas.items() if entry.lora_int_id in ids),
        )


class AdapterInfo(BaseModel):
    object: Literal["adapter"] = "adapter"
    name: str
    active_version: str | None
    requests_total: int
    versions: list[AdapterVersionInfo]
    split: dict[str, int] | None = Field(
        default=None,
        description="The traffic split (version -> percent) requests for `name` follow; "
        "null: the active version serves them all.",
    )
    shadow: ShadowConfig | None = Field(
        default=None, description="The split's shadow version and share (null: none)."
    )
    rollback: RollbackBounds | None = Field(
        default=None, description="The split's automatic rollback bounds (null: none)."
    )

    @classmethod
    def build(
        cls,
        name: str,
        entries: list[AdapterEntry],
        stats: AdapterResidency,
        tracker: InFlightTracker,
        split: TrafficSplit | None = None,
    ) -> AdapterInfo:
        versions = [AdapterVersionInfo.build(e, stats, tracker) for e in entries]
        active = next((v.version for v in versions if v.status is AdapterStatus.ACTIVE), None)
        return cls(
            name=name,
            active_version=active,
            requests_total=sum(v.requests_total for v in versions),
            versions=versions,
            split=dict(split.weights) if split is not None else None,
            shadow=split.shadow if split is not None else None,
            rollback=split.rollback if split is not None else None,
        )


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterInfo]
    slots_known: bool = Field(
        description="Whether the engine reported its slot table; if not, no version is "
        "reported as gpu_slot."
    )
    on_demand: OnDemandReport | None = Field(
        default=None,
        description="Adapters fetched from tenants' sources on first request: requests "
        "and hit rates per tier, residency, the disk cache per tenant.",
    )


class RetireResponse(BaseModel):
    object: Literal["adapter.retired"] = "adapter.retired"
    name: str
    retired: list[str] = Field(
        description="name@version of the retired versions: no longer served; each is "
        "unloaded and removed once its last request has finished."
    )


class ShadowPage(BaseModel):
    """``GET /admin/adapters/{name}/shadow``: recorded shadow pairs, oldest first."""

    object: Literal["list"] = "list"
    data: list[ShadowEntry] = Field(
        description="Both answers of shadowed requests of tenants with `shadow_log: true`."
    )
    has_more: bool
    last_id: int | None = Field(description="Pass as `after` for the next page.")
    dropped: int = Field(
        description="Entries this gateway dropped to stay within its bounds (all tenants)."
    )
