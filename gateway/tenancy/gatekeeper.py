"""``Gatekeeper``: who is calling, what they may call, and whether they may start now.

    authenticate(header) -> Caller              401 before anything else
    async with admit(caller, reserve) as ticket 429 + Retry-After, before any other work
        route(ticket, model, resolve) -> Route  identical 404 for unknown and forbidden
        ticket.reserve_exact(prompt, budget)    the exact token reservation (429 if over)
        ticket.produced(tokens) ...             first token, schedule wait
    (exit)                                      settle tokens, release the slot, record usage

The directory (tenants, keys, policies) is swapped whole by ``reload``; a request keeps
the directory its caller was authenticated under (``Caller.directory``) and the labels
and limits fixed at admission, so a reload mid-request neither mixes versions nor
skews the gauges.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from gateway.errors import RateLimitError
from gateway.metrics import GatewayMetrics, Series
from gateway.model_catalog import ServedModel
from gateway.request_context import current_labels
from gateway.tenancy.admission import InFlightLimiter
from gateway.tenancy.config import TenancyConfig
from gateway.tenancy.directory import Caller, Route, TenantDirectory
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
        self, gatekeeper: Gatekeeper, caller: Caller, limits: dict[str, Limit], reserved: int
    ) -> None:
        self._gatekeeper = gatekeeper
        self.caller = caller
        self.limits = limits
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

    def reserve_exact(self, prompt_tokens: int, completion_budget: int) -> None:
        """Reserve ``prompt_tokens + completion_budget`` in place of the estimate."""
        wanted = prompt_tokens + completion_budget
        delta = wanted - self.reserved
        if delta > 0 and self.limits:
            wait = self._gatekeeper.rate_limiter.reserve_more(self.limits, delta)
            if wait > 0:
                self._gatekeeper.metrics.rejected("rate_limit")
                raise _rate_limited(wait)
        elif delta < 0 and self.limits:
            self._gatekeeper.rate_limiter.charge_tokens(self.limits, delta)
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

    def _settle(self) -> None:
        g = self._gatekeeper
        used = self.prompt_tokens + self.completion_tokens if self.engine_started else 0
        if self.limits and used != self.reserved:
            g.rate_limiter.charge_tokens(self.limits, used - self.reserved)
        if not self.engine_started:
            return
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
    """Built once at start-up. Event-loop only, except ``reload`` (a reference swap)."""

    def __init__(self, tenancy: TenancyConfig, usage: UsageStore, metrics: GatewayMetrics) -> None:
        self.directory = TenantDirectory(tenancy)
        self.usage = usage
        self.metrics = metrics
        self.rate_limiter = RateLimiter()
        self.in_flight = InFlightLimiter()
        self._label_tenants()

    def _label_tenants(self) -> None:
        self.metrics.labels.update(tenants=list(self.directory.config.tenants))

    def reload(self, tenancy: TenancyConfig) -> None:
        self.directory = TenantDirectory(tenancy)
        self._label_tenants()

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
        request and token buckets, all or nothing: a refused request costs nothing.
        """
        directory = _directory_of(caller, self.directory)
        tenant = directory.tenant(caller)
        key = caller.label
        if not self.in_flight.try_enter(key, tenant.max_in_flight if tenant else None):
            self.metrics.rejected("overload")
            raise RateLimitError(
                "Too many concurrent requests for your tenant. Retry shortly.",
                code="too_many_concurrent_requests",
                headers={"Retry-After": "1"},
            )
        try:
            limits = directory.limits(caller)
            wait = self.rate_limiter.admit(limits, reserve_tokens) if limits else 0.0
            if wait > 0:
                self.metrics.rejected("rate_limit")
                raise _rate_limited(wait)
        except BaseException:
            self.in_flight.leave(key)
            raise
        ticket = Ticket(self, caller, limits, reserve_tokens)
        gauge = self.metrics.in_flight.labels(ticket.series.tenant)
        gauge.inc()
        try:
            yield ticket
        finally:
            gauge.dec()
            self.in_flight.leave(key)
            ticket._settle()

    def admit_search(self, caller: Caller) -> None:
        """A direct search: one request from the caller's request buckets, no tokens."""
        limits = _directory_of(caller, self.directory).limits(caller)
        wait = self.rate_limiter.admit(limits, 0) if limits else 0.0
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
