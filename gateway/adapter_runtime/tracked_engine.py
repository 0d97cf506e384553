"""``TrackedEngine``: the engine as the gateway uses it, counting adapter requests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from gateway.adapter_runtime.inflight import InFlightTracker
from gateway.engine.interface import (
    AdapterRef,
    AdapterResidency,
    Engine,
    GenerationOutput,
    GenerationRequest,
    SchedulerFigures,
)


class TrackedEngine:
    """Wraps an ``Engine``; every generation on an adapter holds an in-flight count.

    The count is taken when the generation starts and given back in ``finally``, so a
    finished, failed or cancelled (client gone) request all release it: that is what
    retire-after-drain waits for. Adapter loads are timed for the metrics. Everything
    else is passed through. Same concurrency rule as ``InFlightTracker``.
    """

    def __init__(
        self,
        engine: Engine,
        tracker: InFlightTracker,
        on_adapter_load: Callable[[float], None] | None = None,
    ) -> None:
        self.inner = engine
        self.tracker = tracker
        self._on_adapter_load = on_adapter_load
        self.max_model_len = engine.max_model_len

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        adapter = request.adapter
        if adapter is None:
            async for out in self.inner.generate(request):
                yield out
            return
        self.tracker.enter(adapter.lora_id, adapter.engine_name)
        try:
            async for out in self.inner.generate(request):
                yield out
        finally:
            self.tracker.exit(adapter.lora_id)

    async def load(self, adapter: AdapterRef) -> bool:
        started = time.monotonic()
        loaded = await self.inner.load(adapter)
        if loaded and self._on_adapter_load is not None:
            self._on_adapter_load(time.monotonic() - started)
        return loaded

    async def unload(self, adapter: AdapterRef) -> bool:
        return await self.inner.unload(adapter)

    async def pin(self, adapter: AdapterRef) -> bool:
        return await self.inner.pin(adapter)

    async def residency(self) -> AdapterResidency:
        return await self.inner.residency()

    def figures(self) -> SchedulerFigures:
        return self.inner.figures()

    async def check_health(self) -> None:
        await self.inner.check_health()

    async def shutdown(self) -> None:
        await self.inner.shutdown()
