"""Cancel work whose client has gone, so the engine stops generating for nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the response was ready."""


async def cancel_on_disconnect(
    work: Awaitable[T], wait_for_disconnect: Callable[[], Awaitable[None]]
) -> T:
    """Await ``work``; if ``wait_for_disconnect`` returns first, cancel it and raise.

    The work runs in the caller's task (no task of its own: this is on every request's
    path); a watcher task cancels the caller's task when the client leaves, and that
    cancellation, once ``work`` has unwound, becomes ``ClientDisconnected``. Cancelling
    the work cancels the engine's generator, which aborts the request. A cancellation
    from elsewhere (shutdown) propagates unchanged.
    """
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await wait_for_disconnect()
        left = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:
            raise ClientDisconnected() from None
        raise
    finally:
        watcher.cancel()
