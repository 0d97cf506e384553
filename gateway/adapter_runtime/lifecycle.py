"""``AdapterLifecycle``: every adapter operation that involves the registry and the engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

from adapters.errors import AdapterConflictError, AdapterNotFoundError, AdapterValidationError
from adapters.manifest import AdapterEntry, AdapterStatus
from adapters.registry import AdapterRegistry
from adapters.sources import AdapterSource
from adapters.traffic_split import TrafficSplit
from gateway.adapter_runtime.inflight import InFlightTracker
from gateway.engine.interface import AdapterHost, AdapterLoadRefused, AdapterResidency
from gateway.model_catalog import engine_ref

logger = logging.getLogger(__name__)
T = TypeVar("T")


class AdapterLifecycle:
    """Register, activate, retire, pin, unpin and pre-warm adapters while traffic flows.

    * Hot swap: activating a version first loads it into the engine, then switches the
      registry in one atomic write. Requests already running keep the ``AdapterRef``
      they resolved; new requests resolve the new version. Nothing is unloaded.
    * Retire: the registry stops resolving the version at once; a background task waits
      until its last request ends (``InFlightTracker.drain``), unloads it from the
      engine, then deletes it from the registry.
    * Pin: loaded and pinned in the engine (CPU cache and a batch slot) and flagged in
      the registry; at most ``max_loras - pin_reserve`` versions, so unpinned adapters
      always have a slot. vLLM cannot unpin, so unpinning reloads the weights unpinned.

    * Several gateways (a shared registry): each gateway's registry sees the others'
      changes within its refresh interval; ``follow_registry`` then pins (or unpins)
      in this gateway's engine what another gateway pinned (or unpinned). Drain is per
      gateway: the gateway that retires a version waits for its own requests, then
      ``settle_seconds`` more (the others stop resolving the version by then), then
      unloads and removes it. A request another gateway started on it just before is
      not cut: vLLM's unload only drops the name, the running request keeps its weights.

    Concurrency rule: used from the event loop only. Registry calls that write to disk
    run in worker threads (the registry is thread-safe). Operations that change what
    the engine holds run one at a time under one ``asyncio.Lock``; a registration does
    its slow part (fetch, validate, copy) before taking it. Drain tasks take the lock
    only to unload and remove, never while waiting for requests.
    """

    def __init__(
        self,
        registry: AdapterRegistry,
        engine: AdapterHost,
        tracker: InFlightTracker,
        *,
        max_pinned: int,
        settle_seconds: float = 0.0,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self.tracker = tracker
        self.max_pinned = max_pinned
        self._lock = asyncio.Lock()
        self._drains: dict[int, asyncio.Task[None]] = {}
        self.settle_seconds = settle_seconds
        self._pinned_here: dict[int, AdapterEntry] = {}
        """Versions pinned in this gateway's engine, by LoRA id."""

    @staticmethod
    async def _in_thread(fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ------------------------------------------------------------------ queries

    def resolve(self, name: str, version: str | None = None) -> AdapterEntry:
        """``name@version`` whatever its status, or the active version of ``name``."""
        if version is not None:
            return self.registry.get(name, version)
        return self.registry.resolve(name)

    async def residency(self) -> AdapterResidency:
        return await self.engine.residency()

    # ---------------------------------------------------------------- mutations

    async def register(
        self,
        name: str,
        source: AdapterSource,
        *,
        version: str | None = None,
        activate: bool | None = None,
    ) -> AdapterEntry:
        """Validate and store a new version; activate it (after loading it) if asked.

        ``activate`` None activates only when ``name`` has no active version yet. A
        version the engine cannot load is removed again and reported (422).
        """
        entry = await self._in_thread(
            self.registry.register, name, source, version=version, activate=False
        )
        async with self._lock:
            has_active = any(e.status is AdapterStatus.ACTIVE for e in self.registry.entries(name))
            if activate is True or (activate is None and not has_active):
                try:
                    await self._load(entry)
                except AdapterValidationError:
                    await self._in_thread(self.registry.retire, name, entry.version, purge=True)
                    raise
                entry = await self._in_thread(self.registry.activate, name, entry.version)
        return entry

    async def activate(self, name: str, version: str) -> AdapterEntry:
        """Make ``name@version`` the version ``name`` resolves to (hot swap)."""
        async with self._lock:
            entry = self.registry.get(name, version)
            if entry.status is AdapterStatus.RETIRING:
                raise AdapterConflictError(
                    f"{entry.ref!r} is retiring and cannot be activated.", code="adapter_retiring"
                )
            if entry.status is not AdapterStatus.ACTIVE:
                await self._load(entry)
            return await self._in_thread(self.registry.activate, name, version)

    async def promote(
        self, name: str, version: str, stable: str
    ) -> tuple[AdapterEntry, TrafficSplit | None]:
        """``activate`` for the evaluation gate: loads ``name@version``, then activates it
        only if ``stable`` is still the active version in the shared document and ends a
        split naming it, in one registry write (``AdapterRegistry.promote``)."""
        async with self._lock:
            entry = self.registry.get(name, version)
            if entry.status is AdapterStatus.RETIRING:
                raise AdapterConflictError(
                    f"{entry.ref!r} is retiring and cannot be activated.", code="adapter_retiring"
                )
            if entry.status is not AdapterStatus.ACTIVE:
                await self._load(entry)
            return await self._in_thread(self.registry.promote, name, version, stable)

    async def retire(self, name: str, version: str | None = None) -> list[AdapterEntry]:
        """Stop resolving ``name@version`` (every version if None); unload after draining."""
        async with self._lock:
            retired = await self._in_thread(self.registry.retire, name, version)
        for entry in retired:
            if entry.lora_int_id in self._drains:  # retired before and still draining
                continue
            task = asyncio.create_task(self._drain_and_remove(entry), name=f"drain {entry.ref}")
            self._drains[entry.lora_int_id] = task
        return retired

    async def pin(self, name: str, version: str | None = None) -> AdapterEntry:
        async with self._lock:
            entry = self.resolve(name, version)
            if entry.status is AdapterStatus.RETIRING:
                raise AdapterConflictError(
                    f"{entry.ref!r} is retiring and cannot be pinned.", code="adapter_retiring"
                )
            if not entry.pinned:
                pinned = [e for e in self.registry.entries() if e.pinned]
                if len(pinned) >= self.max_pinned:
                    raise AdapterConflictError(
                        f"At most {self.max_pinned} adapter versions can be pinned (engine slots "
                        f"minus the reserve); pinned now: {[e.ref for e in pinned]}.",
                        code="pin_limit_reached",
                    )
            await self._load_pinned(entry)
            return await self._in_thread(self.registry.pin, name, entry.version)

    async def unpin(self, name: str, version: str | None = None) -> AdapterEntry:
        async with self._lock:
            entry = self.resolve(name, version)
            updated = await self._in_thread(self.registry.unpin, name, entry.version)
            if entry.pinned:
                # vLLM has no unpin: reload the weights unpinned. A running request on
                # them is unaffected (the engine reloads an adapter a batch needs).
                await self.engine.unload(engine_ref(entry))
                await self._load(entry)
            self._pinned_here.pop(entry.lora_int_id, None)
            return updated

    async def prewarm(self, name: str, version: str | None = None) -> AdapterEntry:
        """Load a version into the engine before traffic needs it."""
        async with self._lock:
            entry = self.resolve(name, version)
            if entry.status is AdapterStatus.RETIRING:
                raise AdapterConflictError(
                    f"{entry.ref!r} is retiring; it will not be loaded.", code="adapter_retiring"
                )
            await self._load(entry)
            return entry

    async def restore_pin(self, entry: AdapterEntry) -> None:
        """Load and pin a version the registry says is pinned (start-up), under the lock."""
        async with self._lock:
            await self._load_pinned(entry)

    async def follow_registry(self, interval: float) -> None:
        """Forever (a background task): apply pins made through other gateways."""
        seen = -1
        while True:
            await asyncio.sleep(interval)
            revision = self.registry.revision
            if revision == seen:
                continue
            try:
                await self.sync_pins()
                seen = revision  # a failure is tried again next interval
            except Exception:
                logger.exception("could not apply the shared registry's pins")

    async def sync_pins(self) -> None:
        """Pin in this engine what the registry says is pinned, unpin what it no longer does."""
        pinned = {
            e.lora_int_id: e
            for e in self.registry.entries()
            if e.pinned and e.status is not AdapterStatus.RETIRING
        }
        async with self._lock:
            for lora_id, entry in list(self._pinned_here.items()):
                if lora_id not in pinned:
                    await self.engine.unload(engine_ref(entry))  # vLLM has no unpin
                    self._pinned_here.pop(lora_id, None)
                    current = self._current(entry)
                    if current is not None:
                        await self._load(current)
            for lora_id, entry in pinned.items():
                if lora_id not in self._pinned_here and len(self._pinned_here) < self.max_pinned:
                    await self._load_pinned(entry)
                    logger.info("pinned %s, as another gateway did", entry.ref)

    async def close(self) -> None:
        """Stop drain tasks (shutdown). Their versions stay ``retiring`` in the registry
        and are removed at the next start-up, when no request can be running."""
        tasks = list(self._drains.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_for_drains(self) -> None:
        """Wait until every retired version has been unloaded and removed (tests, CLI)."""
        while self._drains:
            await asyncio.gather(*self._drains.values(), return_exceptions=True)

    # ---------------------------------------------------------------- internals

    async def _load(self, entry: AdapterEntry) -> None:
        """Load ``entry`` into the engine; 422 if the engine refuses the weights."""
        try:
            await self.engine.load(engine_ref(entry))
        except AdapterLoadRefused as exc:
            raise AdapterValidationError(
                f"The engine could not load {entry.ref!r}: {exc}", code="engine_load_failed"
            ) from exc

    async def _load_pinned(self, entry: AdapterEntry) -> None:
        """Load and pin; call with the lock held."""
        await self._load(entry)
        await self.engine.pin(engine_ref(entry))
        self._pinned_here[entry.lora_int_id] = entry

    def _current(self, entry: AdapterEntry) -> AdapterEntry | None:
        """``entry`` as the registry holds it now; None once it is retiring or gone."""
        try:
            now = self.registry.get(entry.name, entry.version)
        except AdapterNotFoundError:
            return None
        return None if now.status is AdapterStatus.RETIRING else now

    async def _drain_and_remove(self, entry: AdapterEntry) -> None:
        try:
            await self._unload_when_idle(entry)
        finally:
            self._drains.pop(entry.lora_int_id, None)

    async def _unload_when_idle(self, entry: AdapterEntry) -> None:
        await self.tracker.drain(entry.lora_int_id)
        if self.settle_seconds > 0:
            await asyncio.sleep(self.settle_seconds)
        async with self._lock:
            try:
                await self.engine.unload(engine_ref(entry))
            except Exception:
                logger.exception("could not unload %s from the engine", entry.ref)
            try:
                await self._in_thread(self.registry.remove, entry.name, entry.version)
            except Exception:
                logger.exception("could not remove %s from the registry", entry.ref)
            else:
                logger.info("adapter %s retired and removed", entry.ref)
