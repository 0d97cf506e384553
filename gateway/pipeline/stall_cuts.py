"""``StalledHolds``: engine slots held by streams whose clients stopped reading, which
the fair queue may take back for a tenant below its share.

Slots are not preemptible in general: a running request keeps its slots until the
engine is done. A stream whose client accepts no bytes is the exception: its events
pile up in the gateway's buffer (``limits.stream_buffer_bytes``); once that is full the
engine request waits for the client while holding its slots, until the client reads or
``limits.client_stall_seconds`` cut it. Meanwhile one tenant can hold every slot (it
took them while nobody else was busy) and another tenant's small request waits.

So such a stream announces itself (``hold``) after its buffer has stayed full for a
short grace (``event_stream.STALL_GRACE_SECONDS``), with a ``cut`` that cancels it: its
engine request is aborted, its slots freed, and the client's connection ends without
the end of the body, as a stall cut does. While a tenant below its weighted share
waits, the fair queue cuts the stalled holds of the tenant furthest over its share,
never taking that tenant below its share, and no more than the waiting tenants' next
requests need. A client that reads again
withdraws its hold.

Concurrency rule: event loop only, owned by one ``FairQueue``; ``cut`` callbacks run
from ``call_soon``, never inside a dispatch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.pipeline.wait_line import TenantState

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class StalledHold:
    tenant: str
    cost: int
    cut: Callable[[], None]
    cutting: bool = False


class StalledHolds:
    def __init__(self) -> None:
        self._holds: dict[int, StalledHold] = {}
        self._ids = itertools.count()
        self.cut_count = 0
        """Streams cut to free slots for another tenant (for tests and logs)."""

    def __len__(self) -> int:
        return len(self._holds)

    def add(self, hold: StalledHold) -> Callable[[], None]:
        """Register ``hold``; returns the function that withdraws it."""
        key = next(self._ids)
        self._holds[key] = hold

        def withdraw() -> None:
            self._holds.pop(key, None)

        return withdraw

    def free_for(self, tenants: Iterable[TenantState], capacity: int, free: int) -> int:
        """Schedule cuts of stalled holds so the waiting tenants below their share can
        start their next requests; returns how many slots are being freed."""
        loads = list(tenants)
        busy = sum(t.weight for t in loads if t.held or t.count)
        if not busy:
            return 0
        wanted = sum(
            t.waiting[0].cost for t in loads if t.count and t.held * busy < capacity * t.weight
        )
        freeing = sum(h.cost for h in self._holds.values() if h.cutting)
        needed = wanted - free - freeing
        if needed <= 0:
            return freeing
        held_after = {t.name: t.held for t in loads}
        for h in self._holds.values():
            if h.cutting:
                held_after[h.tenant] = held_after.get(h.tenant, 0) - h.cost
        by_name = {t.name: t for t in loads}
        candidates = sorted(
            (h for h in self._holds.values() if not h.cutting and h.tenant in by_name),
            key=lambda h: held_after[h.tenant] / by_name[h.tenant].weight,
            reverse=True,
        )
        loop = asyncio.get_running_loop()
        for h in candidates:
            if needed <= 0:
                break
            t = by_name[h.tenant]
            share = capacity * t.weight / busy
            if held_after[h.tenant] - h.cost < share:
                continue  # it would fall below its share
            h.cutting = True
            held_after[h.tenant] -= h.cost
            needed -= h.cost
            freeing += h.cost
            self.cut_count += 1
            logger.warning(
                "stream cut: its client reads nothing and its tenant holds more than "
                "its share of the engine while another tenant waits"
            )
            loop.call_soon(h.cut)
        return freeing
