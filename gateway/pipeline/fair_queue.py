"""``FairQueue``: how many requests the engine runs at once, and who goes next.

    async with queue.slot(tenant, weight, cost):   wait for room (fair by weight),
        ... generate ...                           503 overloaded when the queue is
                                                   full or the wait would be too long

At most ``capacity`` sequences (a request costs ``n`` x its prompts) are in the engine
at once; the rest wait here, not in the engine's own first-come-first-served queue,
so a tenant that floods the gateway cannot push everyone else's requests back.

Order: start-time fair queuing. A request of tenant t with cost c gets the start tag
``S = max(V, F_t)`` and moves the tenant's finish tag to ``F_t = S + c / w_t``; the
waiter with the smallest start tag goes first, and the virtual time ``V`` is the start
tag of the last one dispatched. A tenant that was idle starts at ``V`` (no saved-up
credit); one that floods gets tags further and further ahead, so another tenant's
occasional request passes its whole backlog. Within a tenant, first come first served.

Bounds, each a 503 with ``Retry-After`` at once (never a request left to time out):
- depth: at most ``max_depth`` waiters; each tenant at most its weighted share of
  them while others wait too (a full queue pushes out the newest waiter of the tenant
  furthest over its share to make room for a tenant under its share);
- wait: a request whose predicted wait (the work queued ahead of it, at the rate slots
  have been freed lately) exceeds ``max_wait`` is refused on arrival; one that still
  waits ``max_wait`` leaves with the same 503.

Concurrency rule: event loop only (no locks; every state change is synchronous).
Cancellation-safe: a waiter cancelled (client gone) leaves the queue, and one
cancelled just after it was granted a slot gives the slot back.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from asyncio import FIRST_COMPLETED
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from gateway.errors import OverloadedError
from gateway.metrics import GatewayMetrics
from gateway.serving.disconnect import ClientDisconnected

Abandoned = Callable[[], Awaitable[None]]
"""Returns when the client has gone (the request should leave the queue)."""

SERVICE_EWMA = 0.2
"""Weight of the newest slot hold time in the service-time estimate."""
MAX_RETRY_AFTER = 60


@dataclass(eq=False)
class _Waiter:
    tenant: str
    cost: int
    start: float
    seq: int
    future: asyncio.Future[None]
    queued: bool = True
    granted: bool = False
    refusal: OverloadedError | None = None

    def __lt__(self, other: _Waiter) -> bool:
        return (self.start, self.seq) < (other.start, other.seq)


@dataclass
class _Tenant:
    finish: float = 0.0
    weight: float = 1.0
    waiting: deque[_Waiter] = field(default_factory=deque)


class FairQueue:
    """Built once at start-up; see the module docstring for the rules."""

    def __init__(
        self,
        capacity: int,
        max_depth: int,
        max_wait: float,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = max(1, capacity)
        self.max_depth = max_depth
        self.max_wait = max_wait
        self._metrics = metrics
        self._clock = clock
        self.in_use = 0
        self._virtual = 0.0
        self._heap: list[_Waiter] = []
        self._depth = 0
        self._tenants: dict[str, _Tenant] = {}
        self._seq = itertools.count()
        self._service: float | None = None
        """Mean seconds one unit of cost holds a slot (None: nothing finished yet)."""
        metrics.set_queue_source(self.depths)

    # ------------------------------------------------------------------ reading

    @property
    def depth(self) -> int:
        return self._depth

    def depths(self) -> dict[str, int]:
        """Waiters per tenant (raw tenant names; metrics bound them)."""
        return {name: len(t.waiting) for name, t in self._tenants.items() if t.waiting}

    def estimated_wait(self, ahead: int) -> float | None:
        """Seconds until ``ahead`` units of queued cost have been dispatched."""
        if self._service is None:
            return None
        return ahead * self._service / self.capacity

    def retry_after(self) -> str:
        wait = self.estimated_wait(self._depth)
        seconds = 1 if wait is None else math.ceil(wait)
        return str(min(MAX_RETRY_AFTER, max(1, seconds)))

    # ------------------------------------------------------------------ admission

    def check(self, tenant: str, weight: float = 1.0) -> None:
        """Refuse now (503) what ``slot`` would refuse on arrival for a cost-1 request:
        called before the costly steps (tokenizing) so refusals stay fast."""
        if self.in_use < self.capacity and self._depth == 0:
            return
        state = self._tenants.get(tenant)
        start = max(self._virtual, state.finish if state else 0.0)
        reason = self._verdict(tenant, weight, 1, start)
        if reason is not None and reason != "push_out":
            raise self._refused(reason)

    @asynccontextmanager
    async def slot(
        self, tenant: str, weight: float, cost: int, gone: Abandoned | None = None
    ) -> AsyncIterator[None]:
        """Hold ``cost`` engine slots for the block (clamped to the capacity). While it
        waits, ``gone`` returning (the client left) makes it leave the queue and raise
        ``ClientDisconnected``; it is only watched when the request has to wait."""
        cost = min(max(1, cost), self.capacity)
        waited = await self._acquire(tenant, weight, cost, gone)
        self._metrics.fair_queue_waited(tenant, waited)
        held_from = self._clock()
        try:
            yield
        finally:
            self._observe_service(self._clock() - held_from, cost)
            self._release(cost)

    async def _acquire(
        self, tenant: str, weight: float, cost: int, gone: Abandoned | None
    ) -> float:
        state = self._tenants.setdefault(tenant, _Tenant())
        state.weight = weight
        start = max(self._virtual, state.finish)
        if self._depth == 0 and self.in_use + cost <= self.capacity:
            state.finish = start + cost / weight
            self._virtual = start
            self.in_use += cost
            return 0.0
        reason = self._verdict(tenant, weight, cost, start)
        if reason == "push_out":
            victim = self._most_over_share(tenant, weight)
            assert victim is not None
            self._push_out(victim)
        elif reason is not None:
            raise self._refused(reason)
        now = self._clock()
        loop = asyncio.get_running_loop()
        waiter = _Waiter(tenant, cost, start, next(self._seq), loop.create_future())
        state.finish = start + cost / weight
        state.waiting.append(waiter)
        heapq.heappush(self._heap, waiter)
        self._depth += 1
        watch = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            async with asyncio.timeout(self.max_wait):
                if watch is None:
                    await waiter.future
                else:
                    await asyncio.wait({waiter.future, watch}, return_when=FIRST_COMPLETED)
                    if not waiter.future.done():
                        raise ClientDisconnected()
        except TimeoutError:
            if not waiter.granted:  # (granted just as the time ran out: keep the slot)
                self._leave(waiter)
                raise self._refused("queue_wait") from None
        except BaseException:
            if waiter.granted:  # granted, then cancelled before it ran: give the slot back
                self._release(cost)
            else:
                self._leave(waiter)
            raise
        finally:
            if watch is not None:
                watch.cancel()
        if waiter.refusal is not None:
            raise waiter.refusal
        return self._clock() - now

    def _verdict(self, tenant: str, weight: float, cost: int, start: float) -> str | None:
        """Why a request arriving now is refused (``queue_full``, ``queue_wait``),
        ``push_out`` (the queue is full, but another tenant is over its share), or None."""
        if self.max_depth <= 0:
            return "queue_full"
        ahead = sum(w.cost for w in self._heap if w.queued and w.start <= start)
        wait = self.estimated_wait(ahead + cost)
        if wait is not None and wait > self.max_wait:
            return "queue_wait"
        state = self._tenants.get(tenant)
        if state is not None and len(state.waiting) >= self._share(tenant, weight, tenant, weight):
            return "queue_full"
        if self._depth >= self.max_depth:
            over = self._most_over_share(tenant, weight)
            return "queue_full" if over is None else "push_out"
        return None

    def _share(self, tenant: str, weight: float, joining: str, joining_weight: float) -> int:
        """Most waiters ``tenant`` may hold: its weighted share of the depth among the
        tenants waiting now and ``joining`` (the tenant of the request arriving)."""
        weights = {name: t.weight for name, t in self._tenants.items() if t.waiting}
        weights[joining] = joining_weight
        weights[tenant] = weight
        return max(1, math.floor(self.max_depth * weight / sum(weights.values())))

    def _most_over_share(self, tenant: str, weight: float) -> _Tenant | None:
        """The other waiting tenant with the most waiters per unit of weight, if it
        holds more than its share once ``tenant`` waits too (else None)."""
        best: _Tenant | None = None
        for name, t in self._tenants.items():
            if name == tenant or len(t.waiting) <= self._share(name, t.weight, tenant, weight):
                continue
            if best is None or len(t.waiting) / t.weight > len(best.waiting) / best.weight:
                best = t
        return best

    def _push_out(self, victim: _Tenant) -> None:
        waiter = victim.waiting[-1]
        self._leave(waiter)
        waiter.refusal = self._refused("queue_full")
        waiter.future.set_result(None)

    def _refused(self, reason: str) -> OverloadedError:
        """The 503 for ``reason`` (counted once here)."""
        self._metrics.fair_queue_refused(reason)
        what = "the queue is full" if reason == "queue_full" else "the wait would be too long"
        return OverloadedError(
            f"The server is overloaded ({what}). Retry shortly.",
            headers={"Retry-After": self.retry_after()},
        )

    # ------------------------------------------------------------------ release

    def _leave(self, waiter: _Waiter) -> None:
        """Take a waiter out (it was not granted), and let the next ones in."""
        self._remove(waiter)
        self._dispatch()

    def _remove(self, waiter: _Waiter) -> None:
        state = self._tenants.get(waiter.tenant)
        if not waiter.queued or state is None:
            return
        waiter.queued = False  # its heap entry goes lazily
        was_last = state.waiting[-1] is waiter
        state.waiting.remove(waiter)
        self._depth -= 1
        if was_last:  # it was this tenant's newest: its finish tag goes back
            state.finish = waiter.start
        if not state.waiting:
            self._forget_if_idle(waiter.tenant)

    def _release(self, cost: int) -> None:
        self.in_use -= cost
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant slots to the smallest start tags while they fit (head of line waits
        for room, so a costly request is not starved by cheap ones)."""
        while self._heap:
            head = self._heap[0]
            if head.future.done():  # cancelled, its task not yet resumed to leave
                self._remove(head)
            if not head.queued:
                heapq.heappop(self._heap)  # it left already
                continue
            if self.in_use + head.cost > self.capacity:
                return
            heapq.heappop(self._heap)
            self._tenants[head.tenant].waiting.remove(head)
            head.queued = False
            head.granted = True
            self._depth -= 1
            self._virtual = max(self._virtual, head.start)
            self.in_use += head.cost
            head.future.set_result(None)

    def _forget_if_idle(self, tenant: str) -> None:
        state = self._tenants.get(tenant)
        if state is not None and not state.waiting and state.finish <= self._virtual:
            del self._tenants[tenant]

    def _observe_service(self, seconds: float, cost: int) -> None:
        per_unit = seconds / cost
        old = self._service
        self._service = per_unit if old is None else old + SERVICE_EWMA * (per_unit - old)
