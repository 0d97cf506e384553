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

Headroom (``slot_shares``): a tenant at or over its weighted share of the slots (among
the tenants active lately) leaves ``headroom`` slots free for each active tenant below
its share (at most a quarter of them), so a light tenant's request starts at once while
another floods; a tenant alone gets every slot. Cost: those few slots may idle while a
light tenant is active; none idles forever (a timer re-dispatches when a reserve lapses).

Share cap (``slot_shares.ShareCap``): while another tenant below its share waits, a
tenant holding slots is not granted past its weighted share of the slots among the busy
tenants; what it took while alone it keeps until its requests finish (slots are not
preemptible), and the slots it frees go to the others. The exception: a stream whose
client reads nothing (``stall_cuts``) is cut for a waiting tenant below its share.

Bounds, each a 503 with ``Retry-After`` at once (never a request left to time out):
- depth: at most ``max_depth`` waiters; each tenant at most its weighted share of
  them while others wait too (a full queue pushes out the newest waiter of the tenant
  furthest over its share to make room for a tenant under its share);
- wait: a request whose predicted wait (the work queued ahead of it, at the rate slots
  have been freed lately) exceeds ``max_wait`` is refused on arrival; one that still
  waits ``max_wait`` leaves with the same 503;
- drain: ``close(refusal)`` refuses every waiter at once, and from then on any request
  that would have to wait (a drain lets running requests finish, not queued ones).

Cost per request: O(log tenants) heap work (only each tenant's oldest waiter is in the
heap) plus O(tenants) scans (shares, predicted wait); nothing walks the waiters.

Concurrency rule: event loop only (no locks; every state change is synchronous).
Cancellation-safe: a waiter cancelled (client gone) leaves the queue, and one
cancelled just after it was granted a slot gives the slot back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal

from gateway.errors import GatewayError, OverloadedError
from gateway.metrics import GatewayMetrics, QueueRefusal
from gateway.pipeline.disconnect import cancel_on_disconnect
from gateway.pipeline.slot_shares import ACTIVE_SECONDS, ShareCap, SlotShares
from gateway.pipeline.stall_cuts import StalledHold, StalledHolds
from gateway.pipeline.wait_line import TenantState, Waiter, WaitLine

Abandoned = Callable[[], Awaitable[None]]
"""Returns when the client has gone (the request should leave the queue)."""

SERVICE_EWMA = 0.2
"""Weight of the newest slot hold time in the service-time estimate."""
MAX_RETRY_AFTER = 60
PushOut = Literal["push_out"]
PUSH_OUT: PushOut = "push_out"
"""``_verdict``'s answer when the queue is full but another tenant is over its share of
it: no refusal; that tenant's newest waiter is pushed out to make room."""
WAKE_SLACK = 0.001
"""Past a reserve's lapse, so the re-dispatch finds it lapsed."""


class FairQueue:
    """Built once at start-up; see the module docstring for the rules."""

    def __init__(
        self,
        capacity: int,
        max_depth: int,
        max_wait: float,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
        headroom: int = 1,
        active_seconds: float = ACTIVE_SECONDS,
    ) -> None:
        self.capacity = max(1, capacity)
        self.max_depth = max_depth
        self.max_wait = max_wait
        self._shares = SlotShares(self.capacity, headroom, active_seconds)
        self._cap = ShareCap(self.capacity)
        self._stalled = StalledHolds()
        self._metrics = metrics
        self._clock = clock
        self.in_use = 0
        self._virtual = 0.0
        self._line = WaitLine()
        self._tenants: dict[str, TenantState] = {}
        self._service: float | None = None
        """Mean seconds one unit of cost holds a slot (None: nothing finished yet)."""
        self._closed: Callable[[], GatewayError] | None = None
        self._wake: asyncio.TimerHandle | None = None
        metrics.set_queue_source(self.depths)

    # ------------------------------------------------------------------ reading

    @property
    def depth(self) -> int:
        return self._line.depth

    def depths(self) -> dict[str, int]:
        """Waiters per tenant (raw tenant names; metrics bound them)."""
        return {name: t.count for name, t in self._tenants.items() if t.count}

    @property
    def streams_cut(self) -> int:
        """Stalled streams cut so far to free slots for another tenant."""
        return self._stalled.cut_count

    @property
    def streams_stalled(self) -> int:
        """Running streams whose clients read nothing (see ``stalled``)."""
        return len(self._stalled)

    def estimated_wait(self, ahead: int) -> float | None:
        """Seconds until ``ahead`` units of queued cost have been dispatched."""
        if self._service is None:
            return None
        return ahead * self._service / self.capacity

    def retry_after(self) -> str:
        wait = self.estimated_wait(self._line.depth)
        seconds = 1 if wait is None else math.ceil(wait)
        return str(min(MAX_RETRY_AFTER, max(1, seconds)))

    # ------------------------------------------------------------------ admission

    def check(self, tenant: str, weight: float = 1.0) -> None:
        """Refuse now (503) what ``slot`` would refuse on arrival for a cost-1 request:
        called before the costly steps (tokenizing) so refusals stay fast."""
        state = self._tenants.get(tenant)
        if self.in_use < self.capacity and (
            self._line.depth == 0  # nobody waits: it starts (or waits for headroom only)
            or (self._shares.on and (state is None or self._may_start(state, 1)))
        ):
            return
        if self._closed is not None:
            raise self._refused(QueueRefusal.SHUTTING_DOWN)
        start = max(self._virtual, state.finish if state else 0.0)
        reason = self._verdict(state, weight, 1, start)
        if isinstance(reason, QueueRefusal):
            raise self._refused(reason)

    def stalled(self, tenant: str, cost: int, cut: Callable[[], None]) -> Callable[[], None]:
        """A running request of ``tenant`` holding ``cost`` slots waits for a client that
        reads nothing; ``cut`` cancels it. While a tenant below its share waits, the
        queue may call it (``stall_cuts``). Returns the function that withdraws it."""
        cost = min(max(1, cost), self.capacity)
        withdraw = self._stalled.add(StalledHold(tenant, cost, cut))
        self._take_back()
        return withdraw

    def _take_back(self) -> None:
        if self._stalled and self._line.depth:
            self._stalled.free_for(
                self._tenants.values(), self.capacity, self.capacity - self.in_use
            )

    def close(self, refusal: Callable[[], GatewayError]) -> None:
        """Drain: refuse every waiter now with ``refusal()``, and from now on any request
        that cannot start at once; requests holding slots are left to finish."""
        self._closed = refusal
        for waiter in self._line.waiters(iter(list(self._tenants.values()))):
            self._remove(waiter)
            self._turn_away(waiter, QueueRefusal.SHUTTING_DOWN)

    @asynccontextmanager
    async def slot(
        self, tenant: str, weight: float, cost: int, gone: Abandoned | None = None
    ) -> AsyncIterator[None]:
        """Hold ``cost`` engine slots for the block (clamped to the capacity). While it
        waits, ``gone`` returning (the client left) makes it leave the queue and raise
        ``ClientDisconnected``; it is only watched when the request has to wait."""
        cost = min(max(1, cost), self.capacity)
        state, waited = await self._acquire(tenant, weight, cost, gone)
        self._metrics.fair_queue_waited(tenant, waited)
        held_from = self._clock()
        try:
            yield
        finally:
            self._observe_service(self._clock() - held_from, cost)
            self._release(state, cost)

    async def _acquire(
        self, tenant: str, weight: float, cost: int, gone: Abandoned | None
    ) -> tuple[TenantState, float]:
        now = self._clock()
        state = self._arrive(tenant, weight, now)
        start = max(self._virtual, state.finish)
        if self._line.depth == 0 and self._may_start(state, cost):
            state.finish = start + cost / weight
            self._virtual = start
            state.held += cost
            state.peak = max(state.peak, state.held)
            self.in_use += cost
            return state, 0.0
        reason: QueueRefusal | PushOut | None = (
            QueueRefusal.SHUTTING_DOWN
            if self._closed is not None
            else self._verdict(state, weight, cost, start)
        )
        waiter = self._line.add(state, cost, start)
        self._dispatch()  # it may start at once (a slot kept free for it)
        if waiter.granted:
            return state, 0.0
        if reason == PUSH_OUT:
            victim = self._most_over_share(state, 0.0)  # (it waits now: counted)
            if victim is not None:
                self._push_out(victim)
                reason = None
            else:
                reason = QueueRefusal.QUEUE_FULL
        if isinstance(reason, QueueRefusal):
            self._leave(waiter)
            raise self._refused(reason)
        work = waiter.future if gone is None else cancel_on_disconnect(waiter.future, gone)
        try:
            async with asyncio.timeout(self.max_wait):
                await work
        except TimeoutError:
            if not waiter.granted:  # (granted just as the time ran out: keep the slot)
                self._leave(waiter)
                raise self._refused(QueueRefusal.QUEUE_WAIT) from None
        except BaseException:
            if waiter.granted:  # granted, then cancelled before it ran: give the slot back
                self._release(state, cost)
            else:
                self._leave(waiter)
            raise
        if waiter.refusal is not None:
            raise waiter.refusal
        return state, self._clock() - now

    def _arrive(self, tenant: str, weight: float, now: float) -> TenantState:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = TenantState(tenant)
        self._line.reweigh(state, weight)
        state.seen = now
        return state

    def _verdict(
        self, state: TenantState | None, weight: float, cost: int, start: float
    ) -> QueueRefusal | PushOut | None:
        """Why a request arriving now is refused (``queue_full``, ``queue_wait``),
        ``push_out`` (the queue is full, but another tenant is over its share), or None."""
        if self.max_depth <= 0:
            return QueueRefusal.QUEUE_FULL
        wait = self.estimated_wait(self._cost_ahead(start) + cost)
        if wait is not None and wait > self.max_wait:
            return QueueRefusal.QUEUE_WAIT
        extra = 0.0 if state is not None and state.count else weight
        if state is not None and state.count >= self._depth_share(weight, extra):
            return QueueRefusal.QUEUE_FULL
        if self._line.depth >= self.max_depth:
            over = self._most_over_share(state, extra)
            return QueueRefusal.QUEUE_FULL if over is None else PUSH_OUT
        return None

    def _cost_ahead(self, start: float) -> int:
        """Queued cost with a start tag at most ``start``. A tenant's tags are spaced by
        cost/weight up to its finish tag, so the part past ``start`` is about
        ``(F - start) x w`` (exact but for gaps a left waiter made: within a request)."""
        ahead = 0.0
        for t in self._tenants.values():
            if t.count:
                ahead += min(t.queued_cost, max(0.0, t.queued_cost - (t.finish - start) * t.weight))
        return round(ahead)

    def _depth_share(self, weight: float, extra: float) -> int:
        """Most waiters a tenant of ``weight`` may hold: its weighted share of the depth
        among the tenants waiting now and the one arriving (``extra``: its weight if it
        has no waiter yet, else 0)."""
        total = self._line.waiting_weight + extra
        return max(1, math.floor(self.max_depth * weight / total))

    def _most_over_share(self, joining: TenantState | None, extra: float) -> TenantState | None:
        """The other waiting tenant with the most waiters per unit of weight, if it
        holds more than its share once ``joining`` waits too (else None)."""
        best: TenantState | None = None
        for t in self._tenants.values():
            if t is joining or not t.count or t.count <= self._depth_share(t.weight, extra):
                continue
            if best is None or t.count / t.weight > best.count / best.weight:
                best = t
        return best

    def _push_out(self, victim: TenantState) -> None:
        waiter = victim.waiting[-1]
        self._leave(waiter)
        self._turn_away(waiter, QueueRefusal.QUEUE_FULL)

    def _turn_away(self, waiter: Waiter, reason: QueueRefusal) -> None:
        waiter.refusal = self._refused(reason)
        if not waiter.future.done():
            waiter.future.set_result(None)

    def _refused(self, reason: QueueRefusal) -> GatewayError:
        """The 503 for ``reason`` (counted once here)."""
        self._metrics.fair_queue_refused(reason)
        if reason == QueueRefusal.SHUTTING_DOWN and self._closed is not None:
            return self._closed()
        what = (
            "the queue is full"
            if reason == QueueRefusal.QUEUE_FULL
            else "the wait would be too long"
        )
        return OverloadedError(
            f"The server is overloaded ({what}). Retry shortly.",
            headers={"Retry-After": self.retry_after()},
        )

    # ------------------------------------------------------------------ shares

    def _survey(self) -> None:
        self._shares.survey(self._tenants, self._clock(), self._virtual)

    def _may_start(self, t: TenantState, cost: int) -> bool:
        """Whether a request of ``t`` may take ``cost`` of the free slots now."""
        free = self.capacity - self.in_use
        if cost > free:
            return False
        if not self._shares.on or free - cost >= self._shares.cap:
            return True  # (no reserve can be larger)
        self._survey()
        return self._shares.may_take(t, cost, free)

    # ------------------------------------------------------------------ queue

    def _leave(self, waiter: Waiter) -> None:
        """Take a waiter out (it was not granted), and let the next ones in."""
        self._remove(waiter)
        self._dispatch()

    def _remove(self, waiter: Waiter) -> None:
        self._line.remove(waiter)
        if not waiter.tenant.count:
            self._forget_if_idle(waiter.tenant)

    def _release(self, t: TenantState, cost: int) -> None:
        t.held -= cost
        self.in_use -= cost
        self._dispatch()
        if not t.held and not t.count:
            self._forget_if_idle(t)
        shares = self._shares
        if shares.on and self._clock() - shares.surveyed_at > shares.active_seconds:
            self._survey()  # forgets tenants gone quiet, even when nobody waits

    def _forget_if_idle(self, t: TenantState) -> None:
        if (
            not self._shares.on  # (else ``_survey`` forgets it once inactive)
            and not t.held
            and not t.count
            and t.finish <= self._virtual
            and self._tenants.get(t.name) is t
        ):
            del self._tenants[t.name]

    def _dispatch(self) -> None:
        """Grant slots by smallest start tag while they fit. The head of line waits for
        room (a costly request is not starved by cheap ones); with headroom, a tenant at
        or over its share is passed over while only the reserve is free (and the ones at
        or over share behind it too, for the same reason); with others below their share
        waiting, a tenant is passed over rather than go past its share (``ShareCap``)."""
        if not self._line.depth:
            return
        shares = self._shares if self._shares.on else None
        if shares is not None:
            self._survey()
        cap = self._cap if self._line.waiting_tenants > 1 else None
        if cap is not None:
            cap.start(self._tenants.values())
        passed, capped = self._grant_heads(shares, cap)
        for waiter in passed + capped:
            self._line.push(waiter)
        self._take_back()
        if passed and self.in_use < self.capacity:
            self._wake_at(self._shares.lapse)

    def _grant_heads(
        self, shares: SlotShares | None, cap: ShareCap | None
    ) -> tuple[list[Waiter], list[Waiter]]:
        """``_dispatch``'s loop: grant the head of line while it fits. Returns the
        waiters taken out of line for now, to be put back: passed over for headroom
        (``shares``, None when off) and held back by the share cap (``cap``, None when
        one tenant waits)."""
        passed: list[Waiter] = []
        capped: list[Waiter] = []
        while (head := self._line.head()) is not None:
            if head.future.done():  # cancelled, its task not yet resumed to leave
                self._remove(head)
                continue
            free = self.capacity - self.in_use
            if free <= 0:
                break
            t = head.tenant
            if cap is not None and cap.blocks(t, head.cost):
                capped.append(self._line.pop())
                continue
            below = shares is None or shares.below(t)
            needed_before = shares.need(t) if shares is not None else 0
            if (
                shares is not None
                and not below
                and (passed or not shares.may_take(t, head.cost, free))
            ):
                passed.append(self._line.pop())
                continue
            if head.cost > free:
                break
            was_below = cap is not None and cap.waits_below(t)
            self._grant(head)
            if shares is not None:
                shares.taken(t, needed_before)
            if cap is not None:
                cap.granted(t, was_below)
        return passed, capped

    def _grant(self, waiter: Waiter) -> None:
        self._line.pop()
        self._line.take(waiter)
        waiter.granted = True
        self._virtual = max(self._virtual, waiter.start)
        waiter.tenant.held += waiter.cost
        waiter.tenant.peak = max(waiter.tenant.peak, waiter.tenant.held)
        self.in_use += waiter.cost
        waiter.future.set_result(None)

    def _wake_at(self, when: float) -> None:
        """Re-dispatch when an idle tenant's reserve lapses (the only change that no
        arrival or release announces)."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if when == math.inf:
            return
        delay = max(0.0, when - self._clock()) + WAKE_SLACK
        self._wake = asyncio.get_running_loop().call_later(delay, self._woken)

    def _woken(self) -> None:
        self._wake = None
        self._dispatch()

    def _observe_service(self, seconds: float, cost: int) -> None:
        per_unit = seconds / cost
        old = self._service
        self._service = per_unit if old is None else old + SERVICE_EWMA * (per_unit - old)
