"""``SlotShares``: each active tenant's weighted share of the engine slots, and the
headroom the fair queue keeps free for tenants below theirs.

Slots are not preemptible: fair order alone still makes a light tenant wait for the
first slot a flooder frees (8 slots held ~0.5 s each: a p99 of ~0.25 s). So:

- A tenant is *active* while it has a request waiting or running, and for
  ``active_seconds`` after its last arrival. Its share is ``capacity x w / W`` (``W``:
  the weights of the active tenants).
- A tenant below its share takes any free slot.
- A tenant at or over its share takes slots only if at least ``reserve`` stay free:
  ``headroom`` per active tenant below its share, at most ``capacity // 4`` in all (many
  tenants cannot idle the engine). A tenant alone is below its share until it holds
  every slot; once a light tenant is active, a slot stays free for it and its request
  starts at once.

Cost: while tenants below their share are active, up to ``headroom`` slots each (at most
a quarter of the slots) may idle. None idles forever: a reserve held for a tenant with
nothing waiting or running lapses with its activity (``lapse``: when; the fair queue
re-dispatches then). ``headroom`` 0 turns all of this off.

Concurrency rule: event loop only, owned by one ``FairQueue``.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from typing import Protocol, TypeVar

ACTIVE_SECONDS = 5.0
"""A tenant counts as active (it has a share, and headroom) this long after a request."""


class TenantLoad(Protocol):
    weight: float
    finish: float
    """Its start-time fair queuing finish tag."""
    seen: float
    """Clock time of its last arrival."""
    held: int
    """Slots its requests hold now."""
    count: int
    """Its requests waiting."""


T = TypeVar("T", bound=TenantLoad)


class SlotShares:
    """``survey`` (O(tenants)) before the other questions; ``taken`` keeps its count of
    tenants below their share right as slots are granted in one dispatch."""

    def __init__(self, capacity: int, headroom: int, active_seconds: float) -> None:
        self.capacity = capacity
        self.headroom = max(0, headroom)
        self.active_seconds = active_seconds
        self.cap = capacity // 4
        """Most slots kept free in all."""
        self.lapse = math.inf
        """When the earliest reserve kept for a tenant with nothing in flight lapses."""
        self.surveyed_at = -math.inf
        self._active_weight = 0.0
        self._below = 0

    @property
    def on(self) -> bool:
        return self.headroom > 0 and self.cap > 0

    def survey(self, tenants: MutableMapping[str, T], now: float, virtual: float) -> None:
        """Weigh the active tenants, count those below their share; forget the tenants
        that are inactive and have no fair-queuing credit left (finish tag <= ``virtual``)."""
        active = 0.0
        for t in tenants.values():
            if t.held or t.count or now - t.seen < self.active_seconds:
                active += t.weight
        below = 0
        lapse = math.inf
        stale: list[str] = []
        for name, t in tenants.items():
            if t.held or t.count:
                below += t.held * active < self.capacity * t.weight
            elif now - t.seen < self.active_seconds:
                below += 1  # holds nothing: below any share
                lapse = min(lapse, t.seen + self.active_seconds)
            elif t.finish <= virtual:
                stale.append(name)
        for name in stale:
            del tenants[name]
        self._active_weight, self._below, self.lapse = active, below, lapse
        self.surveyed_at = now

    def below(self, t: TenantLoad) -> bool:
        """Holds less than its weighted share of the slots."""
        return t.held * self._active_weight < self.capacity * t.weight

    def reserve(self) -> int:
        """Slots a tenant at or over its share must leave free."""
        return min(self.cap, self.headroom * self._below)

    def may_take(self, t: TenantLoad, cost: int, free: int) -> bool:
        """Whether ``t`` may take ``cost`` of the ``free`` slots (it fits)."""
        return self.below(t) or free - cost >= self.reserve()

    def taken(self, t: TenantLoad, was_below: bool) -> None:
        """``t`` was granted slots: it may have reached its share."""
        if was_below and not self.below(t):
            self._below -= 1
