"""``WaitLine``: the requests waiting in the fair queue, in start-tag order.

One first-in-first-out line per tenant (a tenant's start tags only grow), and a heap
holding each tenant's oldest waiter: the next waiter is found in O(log tenants) and
nothing walks the waiters. A waiter that leaves from the middle of its line stays there,
marked, until it reaches an end (O(1) to leave); a heap entry of one that left is
dropped when it comes to the top, and the heap is rebuilt when such entries outnumber
the waiters (amortized O(1)).

Concurrency rule: event loop only, owned by one ``FairQueue``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from gateway.errors import GatewayError


@dataclass(eq=False)
class TenantState:
    name: str
    weight: float = 1.0
    finish: float = 0.0
    """Start-time fair queuing finish tag of its newest request."""
    seen: float = -math.inf
    """Clock time of its last arrival."""
    held: int = 0
    """Slots its requests hold now."""
    peak: int = 0
    """The most slots it held at once while active (see ``SlotShares``)."""
    count: int = 0
    """Its waiters."""
    queued_cost: int = 0
    waiting: deque[Waiter] = field(default_factory=deque)
    """Its waiters, oldest first; some that left may linger (``queued`` False)."""


@dataclass(eq=False)
class Waiter:
    tenant: TenantState
    cost: int
    start: float
    seq: int
    future: asyncio.Future[None]
    queued: bool = True
    granted: bool = False
    refusal: GatewayError | None = None

    def __lt__(self, other: Waiter) -> bool:
        return (self.start, self.seq) < (other.start, other.seq)


class WaitLine:
    """Invariant: each tenant with waiters has its oldest waiter queued and in the heap
    (or popped by the caller, to be pushed back), and its newest one queued."""

    def __init__(self) -> None:
        self.depth = 0
        self.waiting_weight = 0.0
        """Sum of the weights of the tenants with waiters."""
        self.waiting_tenants = 0
        """How many tenants have waiters."""
        self._heap: list[Waiter] = []
        self._seq = itertools.count()

    def add(self, t: TenantState, cost: int, start: float) -> Waiter:
        waiter = Waiter(t, cost, start, next(self._seq), asyncio.get_running_loop().create_future())
        t.finish = start + cost / t.weight
        if not t.count:
            self.waiting_weight += t.weight
            self.waiting_tenants += 1
            heapq.heappush(self._heap, waiter)  # its tenant's oldest
        t.waiting.append(waiter)
        t.count += 1
        t.queued_cost += cost
        self.depth += 1
        return waiter

    def head(self) -> Waiter | None:
        """The waiter with the smallest start tag (it stays in the line)."""
        while self._heap and not self._heap[0].queued:
            heapq.heappop(self._heap)  # it left already
        return self._heap[0] if self._heap else None

    def pop(self) -> Waiter:
        """Take ``head()`` off the heap: to ``take`` it, or to pass it over and ``push``
        it back."""
        return heapq.heappop(self._heap)

    def push(self, waiter: Waiter) -> None:
        heapq.heappush(self._heap, waiter)

    def remove(self, waiter: Waiter) -> None:
        """A waiter leaves without a slot; its tenant's finish tag goes back if it was
        the newest."""
        if not waiter.queued:
            return
        if waiter.tenant.waiting[-1] is waiter:
            waiter.tenant.finish = waiter.start
        self.take(waiter)

    def take(self, waiter: Waiter) -> None:
        """A waiter leaves the line (granted, or through ``remove``)."""
        t = waiter.tenant
        was_oldest = t.waiting[0] is waiter
        waiter.queued = False
        t.count -= 1
        t.queued_cost -= waiter.cost
        self.depth -= 1
        if not t.count:
            self.waiting_weight -= t.weight
            self.waiting_tenants -= 1
            t.waiting.clear()
        else:
            while not t.waiting[0].queued:
                t.waiting.popleft()
            while not t.waiting[-1].queued:
                t.waiting.pop()
            if was_oldest:
                heapq.heappush(self._heap, t.waiting[0])
        if not self.depth:
            self._heap.clear()  # only entries of waiters that left
        elif len(self._heap) > 2 * self.depth + 16:
            self._heap = [w for w in self._heap if w.queued]
            heapq.heapify(self._heap)

    def reweigh(self, t: TenantState, weight: float) -> None:
        if t.count:
            self.waiting_weight += weight - t.weight
        t.weight = weight

    def waiters(self, tenants: Iterator[TenantState]) -> list[Waiter]:
        """Every waiter of ``tenants``, oldest first per tenant."""
        return [w for t in tenants for w in t.waiting if w.queued]
