"""``Drain``: a gateway on its way out (SIGTERM), and the requests it still owes.

    drain.begin()            /ready answers 503; new generation requests get a 503
                             ``shutting_down`` with Retry-After (a load balancer sends
                             them elsewhere), and so do those still waiting for an
                             engine slot (``on_begin`` hooks: the fair queue's ``close``):
                             they have not started, and one started late in the drain
                             could be cut mid-stream at the timeout
    await drain.run()        waits until the requests in flight have finished, at most
                             ``timeout`` seconds; then ends the rest: each stream gets an
                             error event and ``data: [DONE]`` at its next output

The pipeline counts its requests in and out (``enter``/``leave``) and asks
``expired`` between outputs. Concurrency rule: event loop only; ``begin`` may be
called from a signal handler through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from gateway.errors import ShuttingDownError

logger = logging.getLogger(__name__)

END_GRACE_SECONDS = 5.0
"""After the timeout: how long the ended streams get to send their error event."""


class Drain:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.draining = False
        self.expired = False
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._began_at: float | None = None
        self._on_begin: list[Callable[[], None]] = []

    def on_begin(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when the drain begins (at once if it has begun)."""
        self._on_begin.append(hook)
        if self.draining:
            hook()

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        self._began_at = time.monotonic()
        logger.info("draining: %d request(s) in flight, up to %.0f s", self.active, self.timeout)
        for hook in self._on_begin:
            hook()

    def refuse_if_draining(self) -> None:
        if self.draining:
            raise self.refusal()

    def refusal(self) -> ShuttingDownError:
        left = self.timeout
        if self._began_at is not None:
            left -= time.monotonic() - self._began_at
        return ShuttingDownError(
            "This server is shutting down; retry the request (another instance will take it).",
            headers={"Retry-After": str(max(1, math.ceil(min(left, 5))))},
        )

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    def check_expired(self) -> None:
        """Between two outputs: past the drain timeout the stream ends here."""
        if self.expired:
            raise ShuttingDownError(
                "The server shut down before this response was complete.",
            )

    async def run(self) -> bool:
        """Begin (if not yet), wait for the requests in flight; True if all finished.
        Past the timeout the rest are ended and get a few seconds to say so."""
        self.begin()
        try:
            await asyncio.wait_for(self._idle.wait(), self.timeout)
            logger.info("drained: every request finished")
            return True
        except TimeoutError:
            pass
        logger.warning("drain timeout: ending %d request(s) still in flight", self.active)
        self.expired = True
        try:
            await asyncio.wait_for(self._idle.wait(), END_GRACE_SECONDS)
        except TimeoutError:
            logger.warning("%d request(s) did not end in time", self.active)
        return False
