"""``EventStreamResponse``: server-sent events, stopped when the client leaves.

Starlette's ``StreamingResponse`` under an ASGI 2.3 server (uvicorn's) runs the body
and a disconnect listener in an anyio task group: per request a task, cancel scopes
and their bookkeeping, which cost as much CPU as a short stream itself. This response
pulls the events in one plain asyncio task and sends them from the request's task,
several per write when they are ready together; another task watches for the
disconnect and cancels the producer when the client is gone (so the engine request
is aborted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024
DEFAULT_STALL_SECONDS = 30.0
STALL_GRACE_SECONDS = 2.0
"""How long the buffer stays full before the stream reports itself stalled (a client
that reads slowly but steadily empties it sooner)."""

OnStall = Callable[[Callable[[], None]], Callable[[], None]]
"""Called with a ``cut`` function when the stream is stalled; returns the function
called when it no longer is (``FairQueue.stalled``)."""


class _Pump:
    """One response's read-ahead buffer, between its producer task and the sender."""

    __slots__ = ("buffer", "ended", "failure", "left", "producer", "ready", "room", "size")

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.size = 0  # characters in buffer
        self.ready = asyncio.Event()  # the buffer holds events, or the producer ended
        self.room = asyncio.Event()  # the buffer has room
        self.room.set()
        self.ended = False  # the producer has ended
        self.left = False  # the client has disconnected
        self.failure: BaseException | None = None  # what the events raised
        self.producer: asyncio.Future[None] | None = None

    def stop(self) -> None:
        """Cancel the producer (which closes the events' iterator)."""
        if self.producer is not None:
            self.producer.cancel()


class EventStreamResponse(Response):
    """``text/event-stream`` from an async iterator of ``str`` events (already framed).

    A producer task pulls the events into a buffer; this task sends what the buffer
    holds each time it wakes, so events that are ready together (a quick engine, a
    burst after a stall) go out in one write instead of one write each, and a slow
    event still goes out the moment it comes. A watcher task waits for the client's
    ``http.disconnect`` and then cancels the producer, which closes the iterator (the
    engine request is aborted). Concurrency rule: one event loop; only the producer
    touches the iterator, only this task calls ``send``.

    The engine and the client are kept apart: the producer reads ahead of the client up
    to ``buffer_bytes`` of events, so a client that reads slowly (or not at all) holds
    no engine slot once the engine is done with its request. A client that accepts no
    bytes for ``stall_seconds`` (the server's ``send`` waits while the socket's buffers
    are full) is cut: the producer is cancelled, which aborts the engine request and
    frees its admission, and the connection is closed without ending the body.

    A buffer full for ``STALL_GRACE_SECONDS`` is reported to ``on_stall`` with a ``cut``
    that cancels the producer the same way (the fair queue may take the slots back for
    another tenant); the client then gets what was buffered and no end of the body.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[str],
        status_code: int = 200,
        *,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        on_stall: OnStall | None = None,
    ) -> None:
        self.events = events
        self.status_code = status_code
        self.background = None
        self.buffer_bytes = buffer_bytes
        self.stall_seconds = stall_seconds
        self.on_stall = on_stall
        self.preempted = False
        """Whether the stream was cut through ``on_stall``'s ``cut``."""
        self.stalled = False
        """Whether the client was cut for accepting no bytes (for tests and logs)."""
        self.init_headers()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = _Pump()
        producer = pump.producer = asyncio.ensure_future(self._produce(pump))
        watcher = asyncio.ensure_future(self._watch(pump, receive))
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
            )  # fmt: skip
            await self._send_events(pump, send)
        except OSError:
            pass  # the client is gone (an ASGI 2.4 server raises on send)
        finally:
            watcher.cancel()
            if not producer.done():
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)

    async def _produce(self, pump: _Pump) -> None:
        """The producer task: pull the events into the buffer, up to ``buffer_bytes``."""
        buffer, ready, room = pump.buffer, pump.ready, pump.room
        limit = self.buffer_bytes
        try:
            async for event in self.events:
                buffer.append(event)
                pump.size += len(event)
                ready.set()
                if pump.size >= limit:
                    room.clear()
                    await self._room(room, partial(self._cut, pump))
        except asyncio.CancelledError:
            pass  # the client left (or the response is being torn down)
        except BaseException as exc:  # noqa: BLE001 (re-raised by the sender)
            pump.failure = exc
        finally:
            pump.ended = True
            ready.set()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()  # when cancelled while waiting for room

    async def _watch(self, pump: _Pump, receive: Receive) -> None:
        """The watcher task: cancel the producer once the client has disconnected."""
        while (await receive())["type"] != "http.disconnect":
            pass
        pump.left = True
        pump.stop()

    def _cut(self, pump: _Pump) -> None:
        self.preempted = True
        pump.stop()

    async def _send_events(self, pump: _Pump, send: Send) -> None:
        """Send what the buffer holds each time the producer wakes this task, until the
        producer has ended and the buffer is empty; then raise the producer's failure."""
        buffer, ready, room = pump.buffer, pump.ready, pump.room
        while True:
            await ready.wait()
            ready.clear()
            last = pump.ended and pump.failure is None and not pump.left and not self.preempted
            if buffer or last:
                body = "".join(buffer).encode()
                buffer.clear()
                pump.size = 0
                room.set()
                # The last events and the body's end in one write when they are
                # ready together (one write and one client wake-up fewer).
                message = {"type": "http.response.body", "body": body, "more_body": not last}
                if not await self._sent(send, message):
                    break
            if pump.ended and not buffer:
                break
        if pump.failure is not None:
            raise pump.failure

    async def _room(self, room: asyncio.Event, cut: Callable[[], None]) -> None:
        """Wait until the sender empties the buffer; past the grace, as a stalled stream."""
        if self.on_stall is None:
            await room.wait()
            return
        try:
            async with asyncio.timeout(STALL_GRACE_SECONDS):
                await room.wait()
                return
        except TimeoutError:
            pass
        withdraw = self.on_stall(cut)
        try:
            await room.wait()
        finally:
            withdraw()

    async def _sent(self, send: Send, message: dict[str, object]) -> bool:
        """Send, or give up on a client that accepts nothing for ``stall_seconds``."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.stall_seconds):  # no task per send
                await send(message)
        except TimeoutError:
            self.stalled = True
            logger.warning(
                "stream cut: the client accepted no bytes for %.0f s",
                time.monotonic() - started,
            )
            return False
        return True
