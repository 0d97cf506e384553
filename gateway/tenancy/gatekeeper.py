"""``Gatekeeper``: authentication, routing, admission and accounting, for every request.

    authenticate(header) -> Caller           401 before anything else
    route(caller, model, resolve) -> Route   identical 404 for unknown and forbidden
    admit(caller, route, prompt_tokens)      429 + Retry-After, before any engine work
    Ticket.first_token() / Ticket.finish()   metrics, rate-limit charge, usage

The directory (tenants, keys, policies) is swapped whole by ``reload``; a request holds
the directory it was routed with until it ends, so in-flight requests finish under
the config they started with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.errors import RateLimitError
from gateway.metrics import GatewayMetrics
from gateway.model_catalog import ServedModel
from gateway.request_context import current_labels
from gateway.tenancy.admission import InFlightLimiter
from gateway.tenancy.config import TenancyConfig
from gateway.tenancy.directory import Caller, Route, TenantDirectory
from gateway.tenancy.rate_limit import Limit, RateLimiter
from gateway.tenancy.usage import UsageStore


@dataclass
class Ticket:
    """One admitted request. ``finish`` must be called exactly once (it is idempotent)."""

    gatekeeper: Gatekeeper
    caller: Caller
    route: Route
    prompt_tokens: int
    limits: dict[str, Limit]
    in_flight_tenant: str
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished: bool = False

    @property
    def adapter(self) -> str | None:
        adapter = self.route.served.adapter
        return adapter.name if adapter else None

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
            self.gatekeeper.metrics.first_token(
                tenant=self.caller.tenant,
                adapter=self.adapter,
                seconds=self.first_token_at - self.started,
            )

    def queued(self, seconds: float | None) -> None:
        """The engine's queue time for this request (gateway admission adds none)."""
        if seconds is not None:
            self.gatekeeper.metrics.queue_wait.observe(seconds)

    def finish(self, completion_tokens: int) -> None:
        if self.finished:
            return
        self.finished = True
        g = self.gatekeeper
        g.in_flight.leave(self.in_flight_tenant)
        g.metrics.in_flight.labels(g.metrics.labels.tenant(self.caller.tenant)).dec()
        if completion_tokens:
            g.rate_limiter.charge_tokens(self.limits, completion_tokens)
        g.metrics.tokens(
            tenant=self.caller.tenant,
            adapter=self.adapter,
            prompt=self.prompt_tokens,
            completion=completion_tokens,
        )
        if self.first_token_at is not None and completion_tokens > 1:
            per_token = (time.monotonic() - self.first_token_at) / (completion_tokens - 1)
            g.metrics.per_token(tenant=self.caller.tenant, adapter=self.adapter, seconds=per_token)
        g.usage.record(
            tenant=self.caller.label,
            key_id=self.caller.key_id,
            model=self.route.reported_id,
            adapter=self.adapter,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion_tokens,
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

    def route(
        self, caller: Caller, model: str | None, resolve: Callable[[str], ServedModel]
    ) -> Route:
        labels = current_labels()
        labels.model = model
        try:
            route = self.directory.route(caller, model, resolve)
        except Exception:
            self.metrics.rejected("not_found")
            raise
        labels.model = route.reported_id
        labels.adapter = route.served.adapter.name if route.served.adapter else None
        return route

    def admit(self, caller: Caller, route: Route, prompt_tokens: int) -> Ticket:
        tenant = self.directory.tenant(caller)
        limits = self.directory.limits(caller)
        wait = self.rate_limiter.admit(limits, prompt_tokens) if limits else 0.0
        if wait > 0:
            self.metrics.rejected("rate_limit")
            if math.isinf(wait):
                raise RateLimitError(
                    "This request needs more tokens than your per-minute limit allows.",
                    code="tokens_exceed_limit",
                )
            retry = max(1, math.ceil(wait))
            raise RateLimitError(
                f"Rate limit reached. Retry after {retry} seconds.",
                headers={"Retry-After": str(retry)},
            )
        key = caller.label
        if not self.in_flight.try_enter(key, tenant.max_in_flight if tenant else None):
            self.rate_limiter.charge_tokens(limits, -prompt_tokens)  # not served: refund
            self.metrics.rejected("overload")
            raise RateLimitError(
                "Too many concurrent requests for your tenant. Retry shortly.",
                code="too_many_concurrent_requests",
                headers={"Retry-After": "1"},
            )
        self.metrics.in_flight.labels(self.metrics.labels.tenant(caller.tenant)).inc()
        return Ticket(self, caller, route, prompt_tokens, limits, key)
