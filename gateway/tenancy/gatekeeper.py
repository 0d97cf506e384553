"""``Gatekeeper``: who is calling, what they may call, and whether they may start now.

    authenticate(header) -> Caller              401 before anything else
    async with admit(caller, reserve) as ticket 429 + Retry-After, before any other work
        route(ticket, model, resolve) -> Route  identical 404 for unknown and forbidden
        await ticket.reserve_exact(prompt, budget)  exact token reservation (429 if over)
        ticket.produced(tokens) ...             first token, schedule wait
    (exit)                                      record usage, settle tokens, free the slot

The buckets and in-flight counts live in a ``LimitStore``: in memory for one gateway,
or on Redis for several (a 503 ``limits_unavailable`` when it cannot be reached).

The directory (tenants, keys, policies) is swapped whole by ``reload``; a request keeps
the directory its caller was authenticated under (``Caller.directory``) and the labels
and limits fixed at admission, so a reload mid-request neither mixes versions nor
skews the gauges.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from gateway.errors import RateLimitError
from gateway.metrics import GatewayMetrics, Series
from gateway.model_catalog import ServedModel
from gateway.request_context import current_labels
from gateway.tenancy.config import TenancyConfig
from gateway.tenancy.directory import Caller, Route, TenantDirectory
from gateway.tenancy.limit_store import InFlightSlot, LimitStore, MemoryLimitStore
from gateway.tenancy.managed import KeyUses, ManagedTenancy
from gateway.tenancy.rate_limit import Limit, RateLimiter
from gateway.tenancy.usage import UsageStore


class Ticket:
    """One admitted request, from admission to its last byte.

    Tokens: admission reserves an upper bound (the completion budget); once the prompt
    is tokenized ``reserve_exact`` sets the reservation to prompt + n x budget; on exit
    the reservation is settled against what the engine really used (the rest refunded).
    A request refused before the engine saw it is charged no tokens.
    """

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        caller: Caller,
        limits: dict[str, Limit],
        reserved: int,
        weight: float = 1.0,
    ) -> None:
        self._gatekeeper = gatekeeper
        self.caller = caller
        self.limits = limits
        self.weight = weight  # the tenant's share of a saturated engine (fair queue)
        self.reserved = reserved
        self.series: Series = gatekeeper.metrics.series(tenant=caller.tenant, adapter=None)
        self.route: Route | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self.engine_started = False

    @property
    def adapter(self) -> str | None:
        if self.route is None or self.route.served.adapter is None:
            return None
        return self.route.served.adapter.name

    async def reserve_exact(self, prompt_tokens: int, completion_budget: int) -> None:
        """Reserve ``prompt_tokens + completion_budget`` in place of the estimate."""
        wanted = prompt_tokens + completion_budget
        delta = wanted - self.reserved
        store = self._gatekeeper.limit_store
        if delta > 0 and self.limits:
            wait = await store.reserve_more(self.limits, delta)
            if wait > 0:
                self._gatekeeper.metrics.rejected("rate_limit")
                raise _rate_limited(wait)
        elif delta < 0 and self.limits:
            await store.charge_tokens(self.limits, delta)
        self.reserved = wanted
        self.prompt_tokens = prompt_tokens

    def engine_start(self) -> None:
        """The prompt goes to the engine now: from here on, tokens are charged."""
        self.engine_started = True

    def produced(self, tokens: int) -> None:
        if tokens <= 0:
            return
        self.completion_tokens += tokens
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
            self._gatekeeper.metrics.first_token(self.series, self.first_token_at - self.started)

    def schedule_wait(self, seconds: float | None) -> None:
        if seconds is not None:
            self._gatekeeper.metrics.schedule_wait(seconds)

    async def _settle(self, slot: InFlightSlot) -> None:
        """Record usage (no awaits before it: it survives a cancelled request), then
        settle the reservation against what was used and free the slot, in one call."""
        self._account()
        used = self.prompt_tokens + self.completion_tokens if self.engine_started else 0
        charge = used - self.reserved if self.limits else 0
        await self._gatekeeper.limit_store.release(slot, self.limits, charge)

    def _account(self) -> None:
        if not self.engine_started:
            return
        g = self._gatekeeper
        g.metrics.tokens(self.series, prompt=self.prompt_tokens, completion=self.completion_tokens)
        if self.first_token_at is not None and self.completion_tokens > 1:
            per_token = (time.monotonic() - self.first_token_at) / (self.completion_tokens - 1)
            g.metrics.per_token(self.series, per_token)
        assert self.route is not None
        g.usage.record(
            tenant=self.caller.label,
            key_id=self.caller.key_id,
            model=self.route.reported_id,
            adapter=self.adapter,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )


class Gatekeeper:
    """Built once at start-up. Event-loop only, except ``reload`` (a reference swap).

    ``limit_store`` (default: in memory) holds the buckets and in-flight counts; the
    gatekeeper owns it and closes it at shutdown.
    """

    def __init__(
        self,
        tenancy: TenancyConfig,
        usage: UsageStore,
        metrics: GatewayMetrics,
        limit_store: LimitStore | None = None,
    ) -> None:
        self.directory = TenantDirectory(tenancy)
        self._swap = threading.Lock()  # reload (a thread) and apply_managed (the loop)
        self.usage = usage
        self.metrics = metrics
        self.limit_store: LimitStore = limit_store or MemoryLimitStore()
        self._label_tenants()

    @property
    def rate_limiter(self) -> RateLimiter:
        """The in-memory store's buckets (tests swap in a limiter with a fake clock)."""
        return self._memory_store().rate_limiter

    @rate_limiter.setter
    def rate_limiter(self, limiter: RateLimiter) -> None:
        self._memory_store().rate_limiter = limiter

    def _memory_store(self) -> MemoryLimitStore:
        if not isinstance(self.limit_store, MemoryLimitStore):
            raise TypeError("the limits live in a shared store, not in this process")
        return self.limit_store

    async def close(self) -> None:
        await self.limit_store.close()

    def _label_tenants(self) -> None:
        self.metrics.labels.update(tenants=list(self.directory.config.tenants))

    def reload(self, tenancy: TenancyConfig) -> None:
        """The config file's tenancy; the admin API's tenants and keys stay laid over it."""
        with self._swap:
            current = self.directory
            self.directory = TenantDirectory(tenancy, current.managed, current.uses, current.clock)
        self._label_tenants()

    def apply_managed(
        self, managed: ManagedTenancy, uses: KeyUses | None = None
    ) -> TenantDirectory:
        """Lay a new snapshot of the admin API's tenants and keys over the file's."""
        with self._swap:
            current = self.directory
            self.directory = TenantDirectory(
                current.file_config, managed, uses or current.uses, current.clock
            )
        self._label_tenants()
        return self.directory

    def authenticate(self, authorization: str | None) -> Caller:
        try:
            caller = self.directory.authenticate(authorization)
        except Exception:
            self.metrics.rejected("auth")
            raise
        current_labels().tenant = caller.tenant
        return caller

    @asynccontextmanager
    async def admit(self, caller: Caller, reserve_tokens: int) -> AsyncIterator[Ticket]:
        """Hold an in-flight slot and a rate-limit reservation for the block's duration.

        The in-flight cap is checked first (it takes nothing from the buckets), then the
        request and token buckets, all or nothing, in one store call: a refused request
        costs nothing.
        """
        directory = _directory_of(caller, self.directory)
        tenant = directory.tenant(caller)
        limits = directory.limits(caller)  # fixed here, with the labels
        cap = tenant.max_in_flight if tenant else None
        entry = await self.limit_store.enter(caller.label, cap, limits, reserve_tokens)
        if entry.slot is None and entry.wait > 0:
            self.metrics.rejected("rate_limit")
            raise _rate_limited(entry.wait)
        if entry.slot is None:
            self.metrics.rejected("overload")
            raise RateLimitError(
                "Too many concurrent requests for your tenant. Retry shortly.",
                code="too_many_concurrent_requests",
                headers={"Retry-After": "1"},
            )
        slot = entry.slot
        weight = tenant.weight if tenant is not None else 1.0
        ticket = Ticket(self, caller, limits, reserve_tokens, weight)
        gauge = self.metrics.child(self.metrics.in_flight, ticket.series.tenant)
        gauge.inc()
        try:
            yield ticket
        finally:
            gauge.dec()
            await ticket._settle(slot)

    async def admit_search(self, caller: Caller) -> None:
        """A direct search: one request from the caller's request buckets, no tokens."""
        limits = _directory_of(caller, self.directory).limits(caller)
        wait = await self.limit_store.admit(limits, 0) if limits else 0.0
        if wait > 0:
            self.metrics.rejected("rate_limit")
            raise _rate_limited(wait)

    def route(
        self, ticket: Ticket, model: str | None, resolve: Callable[[str], ServedModel]
    ) -> Route:
        """Resolve ``model`` for the ticket's caller, and fix the ticket's adapter label."""
        labels = current_labels()
        labels.model = model
        directory = _directory_of(ticket.caller, self.directory)
        try:
            route = directory.route(ticket.caller, model, resolve)
        except Exception:
            self.metrics.rejected("not_found")
            raise
        ticket.route = route
        # The tenant label stays the one fixed at admission.
        ticket.series = Series(ticket.series.tenant, self.metrics.labels.adapter(ticket.adapter))
        labels.model = route.reported_id
        labels.adapter = ticket.adapter
        return route


def _directory_of(caller: Caller, current: TenantDirectory) -> TenantDirectory:
    return caller.directory if caller.directory is not None else current


def _rate_limited(wait: float) -> RateLimitError:
    if math.isinf(wait):
        return RateLimitError(
            "This request needs more tokens than your per-minute limit allows.",
            code="tokens_exceed_limit",
        )
    retry = max(1, math.ceil(wait))
    return RateLimitError(
        f"Rate limit reached. Retry after {retry} seconds.",
        headers={"Retry-After": str(retry)},
    )
