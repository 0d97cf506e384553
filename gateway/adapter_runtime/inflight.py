"""``InFlightTracker``: which adapter versions have requests running in the engine."""

from __future__ import annotations

import asyncio
from collections import Counter

from gateway.errors import ModelNotFoundError


class InFlightTracker:
    """Counts engine requests per LoRA id (one id = one adapter version, never reused).

    A request counts from the moment it reaches the engine (``enter``) until its
    generation ends, however it ends (``exit``). ``drain(lora_id)`` waits until no
    request runs on the id and then *closes* it: a later ``enter`` for that id is
    refused with 404 ``model_not_found``. That is how a retired version is unloaded
    only after its last request: a request that resolved the version just before it
    was retired either reaches the engine before the drain completes (and is waited
    for) or after (and gets the answer it would have got a moment later).

    Concurrency rule: every method runs on the server's event loop thread and the
    synchronous ones never await, so each is atomic with respect to the others
    (asyncio switches tasks only at ``await``). In ``drain`` the final check of the
    count and the closing happen in the same step, with no ``await`` between them.
    Not thread-safe: never call it from a worker thread.
    """

    def __init__(self) -> None:
        self._running: Counter[int] = Counter()
        self._served: Counter[int] = Counter()
        self._closed: set[int] = set()
        self._idle: dict[int, asyncio.Event] = {}

    def enter(self, lora_id: int, model: str) -> None:
        """Count one more request on ``lora_id``; 404 if the version was drained."""
        if lora_id in self._closed:
            raise ModelNotFoundError(model)
        self._running[lora_id] += 1
        self._served[lora_id] += 1

    def exit(self, lora_id: int) -> None:
        """One request on ``lora_id`` ended; wake ``drain`` when it was the last."""
        self._running[lora_id] -= 1
        if self._running[lora_id] <= 0:
            del self._running[lora_id]
            event = self._idle.pop(lora_id, None)
            if event is not None:
                event.set()

    def running(self, lora_id: int) -> int:
        """Requests on ``lora_id`` in the engine now."""
        return self._running.get(lora_id, 0)

    def served(self, lora_id: int) -> int:
        """Requests that reached the engine on ``lora_id`` since start-up."""
        return self._served.get(lora_id, 0)

    def is_closed(self, lora_id: int) -> bool:
        return lora_id in self._closed

    async def drain(self, lora_id: int) -> None:
        """Wait until no request runs on ``lora_id``, then refuse new ones for good."""
        while self._running.get(lora_id, 0) > 0:
            event = self._idle.setdefault(lora_id, asyncio.Event())
            await event.wait()
        self._closed.add(lora_id)
