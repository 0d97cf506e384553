"""``GatewayState``: everything built once at start-up and handed to routes."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base_model import BaseModelSpec
from adapters.limits import AdapterLimits, MiB
from adapters.registry import AdapterRegistry
from gateway.adapter_runtime.canary_rollback import CanaryWatch
from gateway.adapter_runtime.inflight import InFlightTracker
from gateway.adapter_runtime.lifecycle import AdapterLifecycle
from gateway.adapter_runtime.on_demand import OnDemandAdapters
from gateway.adapter_runtime.on_demand_report import OnDemandMetrics
from gateway.adapter_runtime.shared_registry import registry_store_options, settle_seconds
from gateway.adapter_runtime.tracked_engine import TrackedEngine
from gateway.engine.interface import Engine
from gateway.errors import AuthenticationError
from gateway.metrics import GatewayMetrics
from gateway.model_catalog import ModelCatalog
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.pipeline.drain import Drain
from gateway.pipeline.fair_queue import FairQueue
from gateway.pipeline.pipeline import GenerationPipeline
from gateway.pipeline.shadow import ShadowMetrics, ShadowRunner
from gateway.pipeline.shadow_log import ShadowLog
from gateway.rag.embeddings import EmbeddingService
from gateway.rag.provider import StoreProvider, library_config, open_store
from gateway.rag.service import RetrievalService
from gateway.settings import LimitStoreSettings, Settings
from gateway.tenancy.admin_guard import AdminGuard
from gateway.tenancy.budget import BudgetStore, MemoryBudgetStore
from gateway.tenancy.budget_redis import RedisBudgetStore
from gateway.tenancy.directory import Caller
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.limit_store import LimitStore, MemoryLimitStore
from gateway.tenancy.pg_response_store import PostgresResponseStore
from gateway.tenancy.pg_usage import PostgresUsageBackend
from gateway.tenancy.redis_limits import RedisLimitStore
from gateway.tenancy.response_store import ResponseStore, SqliteResponseStore
from gateway.tenancy.tenant_admin import TenantAdmin
from gateway.tenancy.tenant_store import open_tenant_store
from gateway.tenancy.usage import UsageStore
from gateway.tracing import Tracing


@dataclass(frozen=True)
class GatewayState:
    settings: Settings
    engine: Engine
    """The engine as the services use it (a ``TrackedEngine``)."""
    registry: AdapterRegistry
    catalog: ModelCatalog
    lifecycle: AdapterLifecycle
    on_demand: OnDemandAdapters
    """Tenants' adapters fetched from their sources on first request."""
    admin_guard: AdminGuard
    pipeline: GenerationPipeline
    gatekeeper: Gatekeeper
    metrics: GatewayMetrics
    usage: UsageStore
    retrieval: RetrievalService
    embeddings: EmbeddingService
    """``/v1/embeddings``: the retrieval store's embedder, batched."""
    responses: ResponseStore
    """Stored responses of ``/v1/responses``."""
    tenant_admin: TenantAdmin
    """Tenants and keys made over the admin API (``/admin/tenants``), and the audit log."""
    canary_watch: CanaryWatch
    """Ends traffic splits whose canary passed its rollback bounds (a periodic task)."""
    config_path: Path | None = None
    """The file ``reload`` re-reads (None: started without one)."""
    config_overrides: Mapping[str, Any] = field(default_factory=dict)
    """``loragate serve``'s flags (as sections), applied again on every reload."""
    residency_seen: dict[str, int] = field(default_factory=dict)
    """Adapters per residency tier at the last periodic refresh (for metrics)."""
    reload_lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    """Held while a reload reads the file and swaps it in (SIGHUP and the admin call can
    come at once: each applies one whole file, never a mix of two)."""


def open_registry(settings: Settings) -> AdapterRegistry:
    """The adapter registry of ``settings.registry.data_dir``, validating for the served base.

    Blocking (reads the base model's safetensors headers, takes the folder's lock).
    """
    reg = settings.registry
    base = BaseModelSpec.from_directory(
        settings.model.path,
        name=settings.model.served_name,
        aliases=reg.base_aliases,
        match=reg.base_match,
    )
    limits = AdapterLimits(
        max_lora_rank=settings.engine.max_lora_rank,
        max_weights_bytes=reg.max_weights_mib * MiB,
        max_archive_bytes=reg.max_upload_mib * MiB,
    )
    options = registry_store_options(settings.shared_store)
    return AdapterRegistry.open(reg.data_dir, base, limits, **options)


def usage_path(settings: Settings) -> Path:
    return settings.usage_db or settings.registry.data_dir / "usage.db"


def open_usage_store(settings: Settings) -> UsageStore:
    """SQLite in the data folder, or the PostgreSQL every gateway shares (connects now)."""
    shared = settings.shared_store
    if shared.kind == "postgres":
        gateway = f"{socket.gethostname()}:{os.getpid()}"
        backend = PostgresUsageBackend(shared.url(), gateway=gateway, timeout=shared.timeout)
        return UsageStore(backend=backend)
    return UsageStore(usage_path(settings))


def open_response_store(settings: Settings) -> ResponseStore:
    """Stored responses: SQLite in the data folder, or the shared PostgreSQL (connects now)."""
    shared = settings.shared_store
    retention = settings.responses.retention_seconds
    if shared.kind == "postgres":
        return PostgresResponseStore(
            shared.url(), retention_seconds=retention, timeout=shared.timeout
        )
    path = settings.registry.data_dir / "responses.db"
    return SqliteResponseStore(path, retention_seconds=retention)


def open_tenant_admin(settings: Settings, gatekeeper: Gatekeeper) -> TenantAdmin:
    """The admin API's tenants and keys (store as ``shared_store`` says), served now."""
    admin = TenantAdmin(
        open_tenant_store(settings.shared_store, settings.registry.data_dir), gatekeeper
    )
    admin.start()
    return admin


def open_limit_store(settings: LimitStoreSettings) -> LimitStore:
    """The configured store of rate limits and in-flight caps (Redis: no I/O yet)."""
    if settings.kind == "redis":
        return RedisLimitStore.from_settings(settings)
    return MemoryLimitStore()


def open_budget_store(settings: LimitStoreSettings, usage: UsageStore) -> BudgetStore:
    """Budget counters where the rate limits are (Redis: shared), starting from the
    usage store's spend."""
    if settings.kind == "redis":
        return RedisBudgetStore.from_settings(settings, seed=usage.budget_seed)
    return MemoryBudgetStore(seed=usage.budget_seed)


def build_state(
    settings: Settings,
    engine: Engine,
    renderer: PromptRenderer,
    registry: AdapterRegistry,
    metrics: GatewayMetrics | None = None,
    store_provider: StoreProvider | None = None,
    config_path: Path | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    drain: Drain | None = None,
    tracing: Tracing | None = None,
) -> GatewayState:
    """Everything the routes use. ``store_provider`` (default: the configured store,
    built on first use) supplies the retrieval collections."""
    metrics = metrics or GatewayMetrics()
    usage = open_usage_store(settings)
    gatekeeper = Gatekeeper(
        settings.tenancy(),
        usage,
        metrics,
        open_limit_store(settings.limits_store),
        open_budget_store(settings.limits_store, usage),
    )
    if store_provider is None:
        store_provider = StoreProvider(
            lambda: open_store(settings.collections_root, settings.retrieval)
        )
    retrieval = RetrievalService(
        settings.retrieval,
        store_provider,
        metrics,
        library_config(settings.retrieval),
    )

    def lookup(key: str) -> Caller | None:
        try:
            return gatekeeper.directory.authenticate(f"Bearer {key}")
        except AuthenticationError:
            return None

    tracker = InFlightTracker()
    tracked = TrackedEngine(engine, tracker, on_adapter_load=metrics.adapter_load.observe)
    max_pinned = max(0, settings.engine.max_loras - settings.registry.pin_reserve)
    lifecycle = AdapterLifecycle(
        registry,
        tracked,
        tracker,
        max_pinned=max_pinned,
        settle_seconds=settle_seconds(settings.shared_store),
    )
    on_demand = OnDemandAdapters(
        lifecycle,
        settings.adapter_cache,
        settings.registry,
        OnDemandMetrics(metrics.registry),
    )
    catalog = ModelCatalog(
        settings.model.served_name, registry, engine.max_model_len, tenant_adapters=on_demand
    )
    queue = FairQueue(
        settings.admission.engine_capacity(settings.engine),
        settings.admission.max_queue,
        settings.admission.max_queue_wait,
        metrics,
        headroom=settings.admission.headroom,
    )
    tenant_admin = open_tenant_admin(settings, gatekeeper)
    return GatewayState(
        settings=settings,
        engine=tracked,
        registry=registry,
        catalog=catalog,
        lifecycle=lifecycle,
        on_demand=on_demand,
        admin_guard=AdminGuard(
            settings.admin.api_key,
            lookup=lookup,
            has_hashed_keys=lambda: bool(gatekeeper.directory.config.admin.keys),
        ),
        pipeline=GenerationPipeline(
            gatekeeper,
            catalog,
            tracked,
            renderer,
            retrieval,
            settings.limits,
            settings.retrieval,
            queue,
            drain or Drain(settings.server.drain_timeout),
            tracing,
            ShadowRunner(
                tracked,
                queue,
                ShadowMetrics(metrics),
                ShadowLog(
                    settings.rollouts.shadow_log_entries,
                    int(settings.rollouts.shadow_log_mib * MiB),
                ),
                max_in_flight=settings.rollouts.shadow_max_in_flight,
            ),
        ),
        gatekeeper=gatekeeper,
        metrics=metrics,
        usage=usage,
        retrieval=retrieval,
        embeddings=EmbeddingService(
            settings.retrieval, settings.limits, store_provider, gatekeeper, metrics
        ),
        responses=open_response_store(settings),
        tenant_admin=tenant_admin,
        canary_watch=CanaryWatch(registry, metrics, tenant_admin.record),
        config_path=config_path,
        config_overrides=config_overrides or {},
    )
