"""``GracefulServer``: uvicorn, with SIGTERM meaning "drain, then exit 0".

uvicorn on SIGTERM stops accepting connections at once, waits for open ones, then
re-raises the signal (the process dies of it). An orchestrator's rolling restart wants
the opposite order: keep listening while ``/ready`` answers 503 (so the load balancer
takes this instance out), refuse new generation requests with a 503 that says to
retry elsewhere, let requests in flight finish (``server.drain_timeout``), end the
rest with an error event, then stop and exit 0.

Requests are parsed by ``LimitedHttpToolsProtocol`` (httptools with limits on the
request head's size, field count and time: ``gateway.api.http_limits``).

A second SIGTERM, or SIGINT (Ctrl-C), is uvicorn's own fast exit. Concurrency rule:
the signal handler runs in the main thread between bytecodes; it only schedules the
drain on the event loop (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from gateway.api.http_limits import MAX_HEAD_BYTES, LimitedHttpToolsProtocol
from gateway.pipeline.drain import Drain

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5
"""After the drain: uvicorn's own wait for connections before it cancels them."""


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        config.timeout_graceful_shutdown = STOP_GRACE_SECONDS
        if config.http in ("auto", "httptools"):  # the same parser, with head limits
            config.http = LimitedHttpToolsProtocol
        config.h11_max_incomplete_event_size = MAX_HEAD_BYTES  # (when h11 is asked for)
        super().__init__(config)
        self.drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requested = False
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._loop is not None and not self._requested:
            self._requested = True
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        logger.info("SIGTERM: draining before exit")
        self.drain.begin()
        self._draining = asyncio.ensure_future(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        try:
            await self.drain.run()
        finally:
            self.should_exit = True
