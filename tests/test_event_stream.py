"""``EventStreamResponse`` and ``cancel_on_disconnect`` as plain ASGI, with scripted clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from gateway.api.event_stream import EventStreamResponse
from gateway.pipeline.disconnect import ClientDisconnected, cancel_on_disconnect

SCOPE: dict[str, Any] = {"type": "http", "asgi": {"spec_version": "2.3"}}


class Client:
    """ASGI receive/send of a client that stays (or leaves once ``leave`` is set)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.leave = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(dict(message))

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]


async def test_events_ready_together_go_out_in_one_write_and_the_stream_ends() -> None:
    async def events() -> AsyncIterator[str]:
        for i in range(5):
            yield f"data: {i}\n\n"  # no wait between them: all ready at once

    client = Client()
    await asyncio.wait_for(EventStreamResponse(events())(SCOPE, client.receive, client.send), 5)
    start = client.messages[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert b"".join(client.bodies) == b"".join(f"data: {i}\n\n".encode() for i in range(5))
    # Coalesced, the body's end included: one write (one each would be 6).
    assert len(client.bodies) == 1
    assert client.messages[-1]["more_body"] is False


async def test_slow_events_go_out_as_they_come() -> None:
    async def events() -> AsyncIterator[str]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield f"data: {i}\n\n"

    client = Client()
    await asyncio.wait_for(EventStreamResponse(events())(SCOPE, client.receive, client.send), 5)
    assert client.bodies == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert client.messages[-1]["more_body"] is False  # the last event ended the body


async def test_a_client_that_leaves_stops_the_stream_and_closes_the_iterator() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                await asyncio.sleep(0.01)
                yield "data: x\n\n"
        finally:
            closed.set()

    client = Client()
    serving = asyncio.create_task(
        EventStreamResponse(endless())(SCOPE, client.receive, client.send)
    )
    await asyncio.sleep(0.05)
    client.leave.set()
    await asyncio.wait_for(serving, 5)  # ends quietly, no CancelledError
    assert closed.is_set()
    assert client.messages[-1].get("more_body", True)  # no end-of-body for nobody


async def test_a_failure_inside_the_events_propagates() -> None:
    async def broken() -> AsyncIterator[str]:
        yield "data: 1\n\n"
        raise KeyboardInterrupt  # not an Exception: with_error_events lets it through

    client = Client()
    with pytest.raises(KeyboardInterrupt):
        await EventStreamResponse(broken())(SCOPE, client.receive, client.send)


async def test_cancel_on_disconnect_cancels_the_work_and_keeps_the_task_usable() -> None:
    cancelled = asyncio.Event()

    async def work() -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    async def gone() -> None:
        await asyncio.sleep(0.02)

    with pytest.raises(ClientDisconnected):
        await cancel_on_disconnect(work(), gone)
    assert cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation left pending on this task

    async def stays() -> None:
        await asyncio.sleep(30)

    async def quick() -> int:
        return 7

    assert await cancel_on_disconnect(quick(), stays) == 7


async def test_cancel_on_disconnect_lets_an_outside_cancellation_through() -> None:
    async def stays() -> None:
        await asyncio.sleep(30)

    async def runner() -> None:
        await cancel_on_disconnect(asyncio.sleep(30), stays)

    task = asyncio.create_task(runner())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
