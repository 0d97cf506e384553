"""``TrackedEngine``: the engine as the services see it, counting adapter requests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from gateway.adapter_runtime.inflight import InFlightTracker
from gateway.engine.interface import (
    AdapterRef,
    Engine,
    EngineStats,
    GenerationOutput,
    GenerationRequest,
    SchedulerFigures,
)


class TrackedEngine:
    """Wraps an ``Engine``; every generation on an adapter holds an in-flight count.

    The count is taken when the generation starts and given back in ``finally``, so a
    finished, failed or aborted (client gone) request all release it. Everything else
    is passed through unchanged. Same concurrency rule as ``InFlightTracker``.
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

    async def abort(self, request_id: str) -> None:
        await self.inner.abort(request_id)

    async def add_adapter(self, adapter: AdapterRef) -> bool:
        started = time.monotonic()
        loaded = await self.inner.add_adapter(adapter)
        if loaded and self._on_adapter_load is not None:
            self._on_adapter_load(time.monotonic() - started)
        return loaded

    async def remove_adapter(self, lora_id: int) -> bool:
        return await self.inner.remove_adapter(lora_id)

    async def pin_adapter(self, lora_id: int) -> bool:
        return await self.inner.pin_adapter(lora_id)

    async def stats(self) -> EngineStats:
        return await self.inner.stats()

    def figures(self) -> SchedulerFigures:
        return self.inner.figures()

    async def check_health(self) -> None:
        await self.inner.check_health()

    async def shutdown(self) -> None:
        await self.inner.shutdown()
