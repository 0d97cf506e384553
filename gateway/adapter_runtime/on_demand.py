"""``OnDemandAdapters``: tenants' adapters fetched from their sources on first request.

Tiers, hottest first::

    engine slots  <-  engine CPU cache  <-  disk cache (registry copies)  <-  source

A request for a name in a tenant's namespace (``TenantConfig.adapter_source``) that the
registry does not hold yet is fetched from the source, validated and registered exactly
as an admin registration is (``AdapterLifecycle.register``: every refusal, same error),
as the next version of the registry name ``scoped_name(tenant, name)``, loaded into the
engine, and served on that request. The registry's validated copies are the disk cache:
bounded in bytes (``adapter_cache.disk_mib``) and per tenant (``max_adapters``,
``max_mib``), coldest first out; an adapter idle for ``idle_seconds`` leaves too. Leaving
means retiring: the registry stops resolving it at once, its files go once its last
request ends, and the next request fetches it again (a new version: ids never reused).

Remote mode needs nothing more: replicas load an adapter from the registry copy's path,
the folder they share with the gateway, as for any registered adapter.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

from adapters.errors import (
    AdapterConflictError,
    AdapterError,
    AdapterNotFoundError,
    AdapterRequestError,
    BaseModelMismatchError,
    SourceUnavailableError,
)
from adapters.limits import AdapterLimits
from adapters.manifest import AdapterEntry, AdapterStatus
from adapters.namespace_sources import (
    AdapterNamespace,
    AdapterSourceSpec,
    is_namespace_name,
    open_namespace,
)
from adapters.naming import VERSION_PATTERN
from adapters.sources import AdapterSource
from gateway.adapter_runtime.errors import AdapterSourceUnavailableError
from gateway.adapter_runtime.lifecycle import AdapterLifecycle
from gateway.adapter_runtime.miss_memory import MissMemory
from gateway.adapter_runtime.on_demand_report import OnDemandMetrics, OnDemandReport, Tier
from gateway.adapter_runtime.residency import residency_of
from gateway.engine.interface import AdapterResidency
from gateway.errors import ModelNotFoundError
from gateway.model_catalog import TENANT_SOURCE_PREFIX, source_owner
from gateway.settings import AdapterCacheSettings, RegistrySettings

logger = logging.getLogger(__name__)

TAG_CHARS = 10
MAX_NAME_CHARS = 64 - TAG_CHARS - 2
"""Longest name in a namespace: the registry name ``t<tag>-<name>`` has at most 64."""

_fetched_here: ContextVar[bool] = ContextVar("loragate_fetched_here", default=False)
"""Set in a request's context once it waited for a fetch: its routing then counts the
``source`` tier, not the tier the adapter is in after the fetch."""

Opener = Callable[[AdapterSourceSpec], AdapterNamespace]


def scoped_name(tenant: str, name: str) -> str:
    """The registry name of ``tenant``'s adapter ``name``: a tenant tag (a hash, so two
    tenants never share one and no tenant can spell another's) and the name."""
    tag = hashlib.sha256(f"loragate-namespace:{tenant}".encode()).hexdigest()[:TAG_CHARS]
    return f"t{tag}-{name}"


class TenantSource:
    """A namespace's adapter as the registry stores its origin: ``tenant:<t>:<store>``."""

    def __init__(self, tenant: str, inner: AdapterSource) -> None:
        self.tenant = tenant
        self.inner = inner

    def describe(self) -> str:
        return f"{TENANT_SOURCE_PREFIX}{self.tenant}:{self.inner.describe()}"

    def materialize(self, workdir: Path, limits: AdapterLimits) -> Path:
        return self.inner.materialize(workdir, limits)


class OnDemandAdapters:
    """Lookup, single-flight fetch, miss memory and disk-cache bounds (see the module).

    Concurrency rule: event loop only. ``lookup`` never awaits. ``fetch`` keeps one task
    per (tenant, name): every request asking while it runs awaits that same task
    (shielded: a client that leaves does not cancel it for the others), so the store is
    read and the engine loads the adapter once. Store reads run in worker threads.
    """

    def __init__(
        self,
        lifecycle: AdapterLifecycle,
        settings: AdapterCacheSettings,
        registry_settings: RegistrySettings,
        metrics: OnDemandMetrics,
        *,
        opener: Opener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifecycle = lifecycle
        self.registry = lifecycle.registry
        self.settings = settings
        self.metrics = metrics
        self._open = opener or (
            lambda spec: open_namespace(
                spec,
                allowed_roots=registry_settings.allowed_roots,
                allowed_protocols=registry_settings.allowed_protocols,
                allow_internal_hosts=registry_settings.allow_internal_hosts,
            )
        )
        self._clock = clock
        self._namespaces: dict[AdapterSourceSpec, AdapterNamespace] = {}
        self._flights: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.misses = MissMemory(
            settings.miss_ttl_seconds,
            settings.miss_max_entries,
            settings.miss_max_tenants,
            clock,
        )
        self._last_used: dict[int, float] = {}
        self._residency = AdapterResidency()
        self.tiers: Counter[Tier] = Counter()

    @property
    def disk_limit_bytes(self) -> int:
        return int(self.settings.disk_mib * 1024 * 1024)

    # ------------------------------------------------------------------ lookup

    def lookup(self, tenant: str, model: str) -> AdapterEntry | None:
        name, sep, version = model.partition("@")
        if (
            not is_namespace_name(name)
            or len(name) > MAX_NAME_CHARS
            or (sep and not VERSION_PATTERN.fullmatch(version))
        ):
            self._count(Tier.MISSING)
            raise ModelNotFoundError(model)
        scoped = scoped_name(tenant, name)
        try:
            entry = self.registry.resolve(f"{scoped}@{version}" if sep else scoped)
        except (AdapterNotFoundError, BaseModelMismatchError):
            if sep:  # versions are the registry's: only a plain name is fetched
                self._count(Tier.MISSING)
                raise ModelNotFoundError(model) from None
            self._raise_if_remembered(tenant, name)
            return None
        if source_owner(entry) != tenant:  # an admin's adapter that took the name
            self._count(Tier.MISSING)
            raise ModelNotFoundError(model)
        self._last_used[entry.lora_int_id] = self._clock()
        if _fetched_here.get():
            _fetched_here.set(False)
        else:
            self._count(Tier(residency_of(entry.lora_int_id, self._residency).value))
        return entry

    def _raise_if_remembered(self, tenant: str, name: str) -> None:
        miss = self.misses.get(tenant, name)
        if miss is None:
            return
        self._count(Tier.MISSING if miss.error is None else Tier.REFUSED)
        raise miss.error if miss.error is not None else ModelNotFoundError(name)

    def _count(self, tier: Tier) -> None:
        self.tiers[tier] += 1
        self.metrics.requests.labels(tier=tier.value).inc()

    # ------------------------------------------------------------------- fetch

    async def fetch(self, tenant: str, model: str, spec: AdapterSourceSpec) -> None:
        key = (tenant, model)
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(tenant, model, spec), name=f"fetch {model}")
            self._flights[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        try:
            await asyncio.shield(task)
        except ModelNotFoundError:
            self._count(Tier.MISSING)
            raise
        except AdapterSourceUnavailableError:
            self._count(Tier.UNAVAILABLE)
            raise
        except AdapterError:
            self._count(Tier.REFUSED)
            raise
        self._count(Tier.SOURCE)
        _fetched_here.set(True)

    def _landed(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here: each waiter re-raises it for itself

    async def _fetch(self, tenant: str, name: str, spec: AdapterSourceSpec) -> None:
        started = time.monotonic()
        try:
            namespace = await self._namespace(spec)
            source = await asyncio.to_thread(namespace.lookup, name)
        except AdapterRequestError as exc:  # store down, credentials missing, not allowed
            self.metrics.lookups.labels(result="error").inc()
            logger.warning("adapter source of tenant %s unreadable: %s", tenant, exc.message)
            raise _unavailable() from None
        if source is None:
            self.metrics.lookups.labels(result="missing").inc()
            self.misses.remember(tenant, name, None)
            raise ModelNotFoundError(name)
        self.metrics.lookups.labels(result="held").inc()
        try:
            entry = await self.lifecycle.register(
                scoped_name(tenant, name), TenantSource(tenant, source), activate=True
            )
        except AdapterConflictError:
            raise  # another gateway or request registered it meanwhile: not a refusal
        except SourceUnavailableError as exc:
            # Listed, but its files could not be read (store failing mid-fetch, archived
            # objects): no refusal to remember, and the message (the store's endpoint,
            # the library's error) is for the operator's log only.
            self.metrics.lookups.labels(result="error").inc()
            logger.warning("adapter %s of tenant %s unreadable: %s", name, tenant, exc.message)
            raise _unavailable() from None
        except AdapterError as exc:
            logger.info("adapter %s of tenant %s refused: %s", name, tenant, exc.message)
            self.misses.remember(tenant, name, exc)
            raise
        self._last_used[entry.lora_int_id] = self._clock()
        self.metrics.fetch_seconds.observe(time.monotonic() - started)
        logger.info("fetched %s for tenant %s from %s", entry.ref, tenant, namespace.describe())
        await self._enforce_bounds(tenant, spec, keep=entry)
        await self.refresh()

    async def _namespace(self, spec: AdapterSourceSpec) -> AdapterNamespace:
        namespace = self._namespaces.get(spec)
        if namespace is None:  # opening may build a client (boto3): once per spec
            namespace = await asyncio.to_thread(self._open, spec)
            self._namespaces[spec] = namespace
        return namespace

    # ------------------------------------------------------------ disk bounds

    def cached(self) -> list[AdapterEntry]:
        """The fetched adapters the registry serves (retiring ones are on their way out)."""
        return [
            e
            for e in self.registry.entries()
            if source_owner(e) is not None and e.status is not AdapterStatus.RETIRING
        ]

    def _coldness(self, entry: AdapterEntry) -> float:
        return self._last_used.setdefault(entry.lora_int_id, self._clock())

    async def _enforce_bounds(
        self, tenant: str, spec: AdapterSourceSpec, keep: AdapterEntry
    ) -> None:
        """Retire the coldest fetched adapters until the tenant's quotas and the disk
        bound hold (never ``keep``, the one just fetched, nor a pinned one)."""
        cached = self.cached()
        own = [e for e in cached if source_owner(e) == tenant]
        if spec.max_adapters is not None:
            await self._evict(own, lambda left: len(left) > (spec.max_adapters or 0), keep, "quota")
        if spec.max_bytes is not None:
            limit = spec.max_bytes
            await self._evict(own, lambda left: _bytes(left) > limit, keep, "quota")
        limit = self.disk_limit_bytes
        await self._evict(self.cached(), lambda left: _bytes(left) > limit, keep, "disk")

    async def _evict(
        self,
        entries: list[AdapterEntry],
        over: Callable[[list[AdapterEntry]], bool],
        keep: AdapterEntry | None,
        reason: str,
    ) -> None:
        left = list(entries)
        for victim in sorted(entries, key=self._coldness):
            if not over(left):
                return
            if victim == keep or victim.pinned:
                continue
            await self._retire(victim, reason)
            left.remove(victim)

    async def _retire(self, entry: AdapterEntry, reason: str) -> None:
        try:
            await self.lifecycle.retire(entry.name, entry.version)
        except AdapterError as exc:  # pinned or retired meanwhile
            logger.info("could not drop %s from the disk cache: %s", entry.ref, exc.message)
            return
        self._last_used.pop(entry.lora_int_id, None)
        self.metrics.evictions.labels(reason=reason).inc()
        logger.info("dropped %s from the disk cache (%s)", entry.ref, reason)

    async def sweep(self) -> None:
        """Drop adapters idle for ``idle_seconds``; refresh residency and the gauges."""
        idle = self.settings.idle_seconds
        if idle is not None:
            cutoff = self._clock() - idle
            for entry in self.cached():
                if self._coldness(entry) < cutoff and not entry.pinned:
                    await self._retire(entry, "idle")
        await self.refresh()

    async def refresh(self) -> None:
        """Re-read where the engine holds adapters (the tiers of later lookups)."""
        self._residency = await self.lifecycle.residency()
        cached = self.cached()
        self.metrics.disk_bytes.set(_bytes(cached))
        self.metrics.disk_adapters.set(len(cached))

    async def run(self) -> None:
        """Forever (a background task): ``sweep`` every ``sweep_seconds``."""
        while True:
            await asyncio.sleep(self.settings.sweep_seconds)
            try:
                await self.sweep()
            except Exception:
                logger.exception("adapter disk-cache sweep failed")

    def report(self) -> OnDemandReport:
        return OnDemandReport.build(
            tiers=self.tiers,
            cached=self.cached(),
            limit_bytes=self.disk_limit_bytes,
            residency=self._residency,
            remembered_misses=len(self.misses),
            miss_tenants=self.misses.tenants,
            fetching=len(self._flights),
        )


def _bytes(entries: list[AdapterEntry]) -> int:
    return sum(e.size_bytes for e in entries)


def _unavailable() -> AdapterSourceUnavailableError:
    return AdapterSourceUnavailableError(
        "This tenant's adapter source cannot be read now; try again later.",
        param="model",
        headers={"Retry-After": "5"},
    )
