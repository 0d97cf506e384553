"""``Gatekeeper``: who is calling, what they may call, and whether they may start now.

    authenticate(header) -> Caller              401 before anything else
    async with admit(caller, reserve) as ticket 429 + Retry-After, before any other work
                                                (429 insufficient_quota: budget spent)
        route(ticket, model, resolve) -> Route  identical 404 for unknown and forbidden
        await ticket.reserve_exact(prompt, budget)  exact token reservation (429 if over),
                                                and the budgets' reservation, priced
        ticket.produced(tokens) ...             first token, schedule wait
    (exit)                                      record usage and cost, settle tokens and
                                                budgets, free the slot

The buckets and in-flight counts live in a ``LimitStore``, the budget counters in a
``BudgetStore`` (``gateway.tenancy.budget``): in memory for one gateway, or on Redis
for several (a 503 ``limits_unavailable`` when it cannot be reached).

The directory (tenants, keys, policies) is swapped whole by ``reload``; a request keeps
the directory its caller was authenticated under (``Caller.directory``) and the labels
and limits fixed at admission, so a reload mid-request neither mixes versions nor
skews the gauges.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from gateway.errors import RateLimitError
from gateway.metrics import GatewayMetrics, Rejection, Series
from gateway.model_catalog import FetchNeeded, ServedModel
from gateway.request_context import current_labels
from gateway.settings.tenancy import KeyConfig, TenancyConfig
from gateway.tenancy.budget import (
    BudgetDraw,
    BudgetStore,
    MemoryBudgetStore,
    Pricing,
    Spend,
    budget_draws,
    budget_refusal,
    budget_report,
)
from gateway.tenancy.directory import Caller, Route, SourcedResolve, TenantDirectory
from gateway.tenancy.limit_store import InFlightSlot, LimitStore, MemoryLimitStore
from gateway.tenancy.managed import KeyUses, ManagedTenancy
from gateway.tenancy.rate_limit import Limit
from gateway.tenancy.usage import UsageStore


class Ticket:
    """One admitted request, from admission to its last byte.

    Tokens: admission reserves an upper bound (the completion budget); once the prompt
    is tokenized ``reserve_exact`` sets the reservation to prompt + n x budget; on exit
    the reservation is settled against what the engine really used (the rest refunded).
    A request refused before the engine saw it is charged no tokens.

    Budgets (``draws``) follow the same shape: ``reserve_exact`` reserves the prompt and
    completion budget, priced at the full input price, on every budget of the key and
    tenant; on exit the reservation is released and what was used (cached prompt tokens
    at their price) is counted as spent.
    """

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        caller: Caller,
        limits: dict[str, Limit],
        reserved: int,
        weight: float = 1.0,
        draws: tuple[BudgetDraw, ...] = (),
        pricing: Pricing | None = None,
    ) -> None:
        self._gatekeeper = gatekeeper
        self.caller = caller
        self.limits = limits
        self.draws = draws
        self.pricing = pricing
        self.budget_reserved = Spend()
        self.holder = str(next(gatekeeper.holders)) if draws else ""
        self.cached_tokens: dict[int, int] = {}  # per generation, as the engine reports
        self.engine_started_at: float | None = None
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
                self._gatekeeper.metrics.rejected(Rejection.RATE_LIMIT)
                raise _rate_limited(wait)
        elif delta < 0 and self.limits:
            await store.charge_tokens(self.limits, delta)
        self.reserved = wanted
        self.prompt_tokens = prompt_tokens
        if self.draws:
            await self._reserve_budget(prompt_tokens, completion_budget)

    async def _reserve_budget(self, prompt_tokens: int, completion_budget: int) -> None:
        amount = Spend(
            prompt_tokens + completion_budget, self.cost(prompt_tokens, completion_budget)
        )
        delta = amount - self.budget_reserved
        refused = await self._gatekeeper.budgets.reserve(self.draws, delta, self.holder)
        if refused is not None:
            self._gatekeeper.metrics.rejected(Rejection.BUDGET)
            raise budget_refusal(refused)
        self.budget_reserved = amount

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """What these tokens cost on this ticket's model and adapter."""
        if self.pricing is None:
            return 0.0
        served = self.route.served if self.route is not None else None
        return self.pricing.cost(
            served.id if served is not None else None,
            self.adapter,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
        )

    def engine_start(self) -> None:
        """The prompt goes to the engine now: from here on, tokens are charged."""
        self.engine_started = True
        self.engine_started_at = time.monotonic()

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

    async def settle(self, slot: InFlightSlot) -> None:
        """Record usage (no awaits before it: it survives a cancelled request), then
        settle the reservation against what was used and free the slot, in one call,
        and the budgets' reservation in a task of its own: a cancelled request's scope
        cancels each await here again, and the settlement must run all the same."""
        spent = self._account()
        used = self.prompt_tokens + self.completion_tokens if self.engine_started else 0
        charge = used - self.reserved if self.limits else 0
        budgets = None
        if self.draws and (self.budget_reserved.tokens or spent.tokens):
            g = self._gatekeeper
            settle = g.budgets.settle(self.draws, self.budget_reserved, spent, self.holder)
            budgets = self._gatekeeper.keep(asyncio.ensure_future(settle))
        await self._gatekeeper.limit_store.release(slot, self.limits, charge)
        if budgets is not None:
            await asyncio.shield(budgets)

    def _account(self) -> Spend:
        """Record usage, cost and engine time; the spend it counts against budgets."""
        if not self.engine_started:
            return Spend()
        g = self._gatekeeper
        cost = self.cost(
            self.prompt_tokens, self.completion_tokens, sum(self.cached_tokens.values())
        )
        ended = time.monotonic()
        seconds = ended - self.engine_started_at if self.engine_started_at is not None else 0.0
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
            cost=cost,
            engine_seconds=seconds,
        )
        g.metrics.spend(self.series, self.route.reported_id, cost=cost, engine_seconds=seconds)
        return Spend(self.prompt_tokens + self.completion_tokens, cost)


class Gatekeeper:
    """Built once at start-up. Event-loop only, except ``reload`` (a reference swap).

    ``limit_store`` (default: in memory) holds the buckets and in-flight counts,
    ``budgets`` (default: in memory, starting from the usage store's spend) the budget
    counters; the gatekeeper owns both and closes them at shutdown.
    """

    def __init__(
        self,
        tenancy: TenancyConfig,
        usage: UsageStore,
        metrics: GatewayMetrics,
        limit_store: LimitStore | None = None,
        budgets: BudgetStore | None = None,
    ) -> None:
        self.directory = TenantDirectory(tenancy)
        self._swap = threading.Lock()  # reload (a thread) and apply_managed (the loop)
        self.usage = usage
        self.metrics = metrics
        self.limit_store: LimitStore = limit_store or MemoryLimitStore()
        self.budgets: BudgetStore = budgets or MemoryBudgetStore(seed=usage.budget_seed)
        self._settling: set[asyncio.Future[None]] = set()
        self.holders = itertools.count()  # names each request's budget reservation
        self._key_index: tuple[TenantDirectory, dict[str, KeyConfig]] | None = None
        self._label_tenants()

    def _key_of(self, caller: Caller, directory: TenantDirectory) -> KeyConfig | None:
        """The caller's key as the directory's tenancy names it (its budget), from an
        index made once per directory version."""
        if caller.key_id is None:
            return None
        index = self._key_index
        if index is None or index[0] is not directory:
            keys = {k.id: k for t in directory.config.tenants.values() for k in t.keys}
            index = self._key_index = (directory, keys)
        return index[1].get(caller.key_id)

    def keep(self, task: asyncio.Future[None]) -> asyncio.Future[None]:
        """Hold a settlement task until it is done (the loop keeps only weak references)."""
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return task

    async def close(self) -> None:
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self.limit_store.close()
        await self.budgets.close()

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

    async def budget_status(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every configured budget (of ``tenant`` only, when given) in its period now."""
        return await budget_report(self.budgets, self.directory.config, tenant, time.time())

    def authenticate(self, authorization: str | None) -> Caller:
        try:
            caller = self.directory.authenticate(authorization)
        except Exception:
            self.metrics.rejected(Rejection.AUTH)
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
        key = self._key_of(caller, directory) if tenant is not None else None
        draws = budget_draws(caller.tenant, tenant, key, time.time())
        if draws:  # a spent budget: refused before it takes anything
            refused = await self.budgets.check(draws)
            if refused is not None:
                self.metrics.rejected(Rejection.BUDGET)
                raise budget_refusal(refused)
        cap = tenant.max_in_flight if tenant else None
        entry = await self.limit_store.enter(caller.label, cap, limits, reserve_tokens)
        if entry.slot is None and entry.wait > 0:
            self.metrics.rejected(Rejection.RATE_LIMIT)
            raise _rate_limited(entry.wait)
        if entry.slot is None:
            self.metrics.rejected(Rejection.OVERLOAD)
            raise RateLimitError(
                "Too many concurrent requests for your tenant. Retry shortly.",
                code="too_many_concurrent_requests",
                headers={"Retry-After": "1"},
            )
        slot = entry.slot
        weight = tenant.weight if tenant is not None else 1.0
        pricing = Pricing(directory.config.pricing)
        ticket = Ticket(self, caller, limits, reserve_tokens, weight, draws, pricing)
        gauge = self.metrics.child(self.metrics.in_flight, ticket.series.tenant)
        gauge.inc()
        try:
            yield ticket
        finally:
            gauge.dec()
            await ticket.settle(slot)

    async def admit_search(self, caller: Caller) -> None:
        """A direct search: one request from the caller's request buckets, no tokens."""
        limits = _directory_of(caller, self.directory).limits(caller)
        wait = await self.limit_store.admit(limits, 0) if limits else 0.0
        if wait > 0:
            self.metrics.rejected(Rejection.RATE_LIMIT)
            raise _rate_limited(wait)

    def route(
        self,
        ticket: Ticket,
        model: str | None,
        resolve: Callable[[str], ServedModel],
        sourced: SourcedResolve | None = None,
        sticky: str | None = None,
    ) -> Route:
        """Resolve ``model`` for the ticket's caller, and fix the ticket's adapter label.
        ``sticky``: the caller's key for traffic splits (an alias's split uses it)."""
        labels = current_labels()
        labels.model = model
        directory = _directory_of(ticket.caller, self.directory)
        try:
            route = directory.route(ticket.caller, model, resolve, sourced, sticky)
        except FetchNeeded:
            raise  # not a refusal yet: the caller fetches and routes again
        except Exception:
            self.metrics.rejected(Rejection.NOT_FOUND)
            raise
        ticket.route = route
        # The tenant label stays the one fixed at admission.
        # Metrics and traces: name@version for a version chosen by a traffic split.
        adapter_label = route.served.adapter_label
        ticket.series = Series(ticket.series.tenant, self.metrics.labels.adapter(adapter_label))
        labels.model = route.reported_id
        labels.adapter = adapter_label
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
