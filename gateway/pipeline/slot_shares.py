"""``SlotShares``: each active tenant's weighted share of the engine slots, and the
headroom the fair queue keeps free for tenants below theirs.

Slots are not preemptible: fair order alone still makes a light tenant wait for the
first slot a flooder frees (8 slots held ~0.5 s each: a p99 of ~0.25 s). So:

- A tenant is *active* while it has a request waiting or running, and for
  ``active_seconds`` after its last arrival. Its share is ``capacity x w / W`` (``W``:
  the weights of the active tenants).
- A tenant below its share takes any free slot.
- A tenant at or over its share takes slots only if at least ``reserve`` stay free: for
  each active tenant below its share, what it may need at once (its peak concurrency
  while active, less what it holds, at least ``headroom``, at most the rest of its
  share), at most ``capacity // 4`` in all (many tenants cannot idle the engine). A
  tenant alone is below its share until it holds every slot; once a light tenant is
  active, slots stay free for it and its requests start at once, also two of them that
  arrive together if it has run two at a time.

Cost: while tenants below their share are active, the slots kept for them (at most a
quarter of the slots) may idle. None idles forever: a reserve held for a tenant with
nothing waiting or running lapses with its activity (``lapse``: when; the fair queue
re-dispatches then). ``headroom`` 0 turns all of this off.

Concurrency rule: event loop only, owned by one ``FairQueue``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping
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
    peak: int
    """The most slots it held at once while active (0 once inactive)."""
    count: int
    """Its requests waiting."""


T = TypeVar("T", bound=TenantLoad)


class SlotShares:
    """``survey`` (O(tenants)) before the other questions; ``taken`` keeps the reserve
    right as slots are granted in one dispatch."""

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
        self._needed = 0
        """Slots the active tenants below their share may need (``need``), summed."""

    @property
    def on(self) -> bool:
        return self.headroom > 0 and self.cap > 0

    def survey(self, tenants: MutableMapping[str, T], now: float, virtual: float) -> None:
        """Weigh the active tenants, sum what those below their share need; forget the tenants
        that are inactive and have no fair-queuing credit left (finish tag <= ``virtual``)."""
        active = 0.0
        for t in tenants.values():
            if t.held or t.count or now - t.seen < self.active_seconds:
                active += t.weight
        self._active_weight = active
        needed = 0
        lapse = math.inf
        stale: list[str] = []
        for name, t in tenants.items():
            if t.held or t.count:
                needed += self.need(t)
            elif now - t.seen < self.active_seconds:
                needed += self.need(t)  # holds nothing: below any share
                lapse = min(lapse, t.seen + self.active_seconds)
            else:
                t.peak = 0
                if t.finish <= virtual:
                    stale.append(name)
        for name in stale:
            del tenants[name]
        self._needed, self.lapse = needed, lapse
        self.surveyed_at = now

    def below(self, t: TenantLoad) -> bool:
        """Holds less than its weighted share of the slots."""
        return t.held * self._active_weight < self.capacity * t.weight

    def need(self, t: TenantLoad) -> int:
        """Slots kept for an active tenant ``t``: none at or over its share, else what it
        ran at once lately beyond what it holds (at least ``headroom``), within its share."""
        if not self.below(t):
            return 0
        room = math.ceil(self.capacity * t.weight / self._active_weight) - t.held
        return max(0, min(max(self.headroom, t.peak - t.held), room))

    def reserve(self) -> int:
        """Slots a tenant at or over its share must leave free."""
        return min(self.cap, self._needed)

    def may_take(self, t: TenantLoad, cost: int, free: int) -> bool:
        """Whether ``t`` may take ``cost`` of the ``free`` slots (it fits)."""
        return self.below(t) or free - cost >= self.reserve()

    def taken(self, t: TenantLoad, needed_before: int) -> None:
        """``t`` was granted slots (``needed_before``: its ``need`` before): it needs
        fewer kept for it now, or none once at its share."""
        self._needed += self.need(t) - needed_before


class ShareCap:
    """While another tenant below its share waits, a tenant that holds slots is not
    granted a request that would take it past its weighted share of the slots among
    the busy tenants (those holding or waiting): ``capacity x w / W_busy``.

    Slots are not preemptible, so what a tenant took while alone stays with it until
    its requests finish; from then on the slots it frees go to the others until they
    hold their share. A tenant holding nothing may always start one request (a request
    larger than the share is not starved), and a tenant at or over its own share
    waiting does not hold others back (slots idle only for a tenant that could use
    them). Independent of ``headroom``.

    ``start`` (O(tenants)) at the beginning of a dispatch, then ``blocks`` per waiter
    and ``granted`` per grant (O(1)); the busy weight does not change within a
    dispatch (a grant moves a tenant's cost from waiting to holding).
    Concurrency rule: event loop only, owned by one ``FairQueue``.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._busy = 0.0
        self._below_waiting = 0
        """Tenants with waiters that hold less than their share."""

    def start(self, tenants: Iterable[TenantLoad]) -> None:
        loads = list(tenants)
        self._busy = sum(t.weight for t in loads if t.held or t.count)
        self._below_waiting = sum(1 for t in loads if self._waits_below(t))

    def _waits_below(self, t: TenantLoad) -> bool:
        return bool(t.count) and t.held * self._busy < self.capacity * t.weight

    def blocks(self, t: TenantLoad, cost: int) -> bool:
        """Whether granting ``cost`` to ``t`` would take it past its share while
        another tenant below its share waits."""
        if not t.held or (t.held + cost) * self._busy <= self.capacity * t.weight:
            return False
        return self._below_waiting - self._waits_below(t) > 0

    def waits_below(self, t: TenantLoad) -> bool:
        """Call before a grant to ``t``, and hand the answer to ``granted``."""
        return self._waits_below(t)

    def granted(self, t: TenantLoad, was_below: bool) -> None:
        self._below_waiting += self._waits_below(t) - was_below
