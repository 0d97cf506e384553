"""Budgets: tokens and cost per tenant or key per UTC day or month, reserved before the
engine and settled after it.

    budget_draws(tenant, key, now) -> [BudgetDraw]    which budgets a request draws from
    await store.check(draws)         -> refusing draw  admission: a spent budget, 429 at once
    await store.reserve(draws, amt)  -> refusing draw  prompt + completion budget, priced
    await store.settle(draws, amt, used)               what the engine really produced

A reservation counts against a budget like spend until it is settled, and a request is
admitted only if ``spent + reserved + its reservation`` fits every budget it draws from,
all or nothing. Its reservation bounds what it can use (the prompt, and the completion
budget it asked for), so however many requests run at once, the tokens served never
pass a budget. The price is that a request whose completion budget does not fit what
is left is refused even if its answer would have been short.

Where the counters live (``BudgetStore``): ``MemoryBudgetStore`` for one gateway (here)
or ``gateway.tenancy.budget_redis.RedisBudgetStore`` for every gateway on one Redis.
A counter starts from the spend the usage store holds for its period (``seed``), so a
restarted gateway keeps counting where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.errors import RateLimitError
from gateway.settings.tenancy import (
    BudgetConfig,
    BudgetPeriod,
    KeyConfig,
    PriceConfig,
    PricingConfig,
    TenancyConfig,
    TenantConfig,
)

COST_SLACK = 1e-9
"""Cost sums are floats: a request that fits to within this much fits."""


class BudgetExceededError(RateLimitError):
    """429 with OpenAI's ``insufficient_quota`` (``type`` and ``code``): a budget of the
    caller's key or tenant would be passed. No ``Retry-After``: retrying does not help
    before the period ends.

        GatewayError
        └── RateLimitError            429 rate_limit_error
            └── BudgetExceededError   429 insufficient_quota  (code: insufficient_quota)
    """

    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


@dataclass(frozen=True)
class Spend:
    """Tokens (prompt + completion) and their cost in the pricing currency."""

    tokens: int = 0
    cost: float = 0.0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.tokens + other.tokens, self.cost + other.cost)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(self.tokens - other.tokens, self.cost - other.cost)


@dataclass(frozen=True)
class Window:
    """One budget period: ``name`` ("day:2026-12-07", "month:2026-12") and its bounds
    in unix seconds, UTC."""

    name: str
    start: float
    end: float


def window_of(period: BudgetPeriod, now: float) -> Window:
    """The UTC day or month that holds ``now``."""
    t = datetime.fromtimestamp(now, UTC)
    if period is BudgetPeriod.DAY:
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
        return Window(f"day:{start:%Y-%m-%d}", start.timestamp(), end.timestamp())
    start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return Window(f"month:{start:%Y-%m}", start.timestamp(), end.timestamp())


@dataclass(frozen=True)
class BudgetDraw:
    """One budget a request draws from: ``subject`` is ``tenant:<name>`` or
    ``key:<id>``, counted in ``window``."""

    subject: str
    budget: BudgetConfig
    window: Window

    @property
    def counter(self) -> str:
        """The name of this budget's counter for its period."""
        return f"{self.subject}:{self.window.name}"

    def fits(self, spent: Spend, reserved: Spend, amount: Spend) -> bool:
        """Whether ``amount`` more keeps spend plus reservations within the budget."""
        after = spent + reserved + amount
        max_tokens, max_cost = self.budget.max_tokens, self.budget.max_cost
        if max_tokens is not None and after.tokens > max_tokens:
            return False
        return max_cost is None or after.cost <= max_cost + COST_SLACK

    def exhausted(self, spent: Spend, reserved: Spend) -> bool:
        """Nothing is left: no request at all can fit."""
        used = spent + reserved
        max_tokens, max_cost = self.budget.max_tokens, self.budget.max_cost
        if max_tokens is not None and used.tokens >= max_tokens:
            return True
        return max_cost is not None and used.cost >= max_cost - COST_SLACK


def budget_draws(
    tenant_name: str | None,
    tenant: TenantConfig | None,
    key: KeyConfig | None,
    now: float,
) -> tuple[BudgetDraw, ...]:
    """The budgets of a key and of its tenant (key first), each in its current period."""
    draws = []
    if key is not None and key.budget is not None:
        draws.append(BudgetDraw(f"key:{key.id}", key.budget, window_of(key.budget.period, now)))
    if tenant_name is not None and tenant is not None and tenant.budget is not None:
        budget = tenant.budget
        draws.append(BudgetDraw(f"tenant:{tenant_name}", budget, window_of(budget.period, now)))
    return tuple(draws)


class Pricing:
    """The price table: an adapter's entry, else its base model's, else the default;
    a model with none of these costs 0."""

    def __init__(self, config: PricingConfig) -> None:
        self.config = config

    def price(self, base: str | None, adapter: str | None) -> PriceConfig | None:
        models = self.config.models
        found = models.get(adapter) if adapter is not None else None
        if found is None and base is not None:
            found = models.get(base)
        return found if found is not None else self.config.default

    def cost(
        self,
        base: str | None,
        adapter: str | None,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> float:
        """Cost of one request; ``cached_tokens`` (part of ``prompt_tokens``) at the
        cached-input price."""
        price = self.price(base, adapter)
        if price is None:
            return 0.0
        cached = min(max(cached_tokens, 0), prompt_tokens)
        cached_price = price.input if price.cached_input is None else price.cached_input
        return (
            (prompt_tokens - cached) * price.input
            + cached * cached_price
            + completion_tokens * price.output
        ) / 1_000_000


Seed = Callable[[BudgetDraw], Awaitable[Spend]]
"""The spend already recorded for a draw's subject in its period (the usage store)."""


class SeedReads:
    """Each counter's seed read once at a time: requests that need it while it is being
    read wait on that read, shielded (a cancelled request does not cancel it for the
    others); a failed read is tried again by the next request. No ``seed``: nothing
    was spent before. Concurrency rule: event-loop only."""

    def __init__(self, seed: Seed | None) -> None:
        self._seed = seed
        self._pending: dict[str, asyncio.Future[Spend]] = {}

    async def read(self, draw: BudgetDraw) -> Spend:
        name = draw.counter
        pending = self._pending.get(name)
        if pending is None:
            pending = self._pending[name] = asyncio.ensure_future(self._first(draw))
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done():
                self._pending.pop(name, None)

    async def _first(self, draw: BudgetDraw) -> Spend:
        return await self._seed(draw) if self._seed is not None else Spend()


class BudgetStore(Protocol):
    """Budget counters (spent and reserved per subject and period), for one gateway or
    shared by several.

    Concurrency rule: called from the event loop. ``settle`` runs in ``finally`` blocks
    of cancelled requests: an implementation that does I/O must finish it even when its
    caller is cancelled (shield it), and never raise.
    """

    async def check(self, draws: tuple[BudgetDraw, ...]) -> BudgetDraw | None:
        """The first draw whose budget is already spent, or None."""
        ...

    async def reserve(
        self, draws: tuple[BudgetDraw, ...], amount: Spend, holder: str = ""
    ) -> BudgetDraw | None:
        """Reserve ``amount`` on every draw, all or nothing: None when reserved, else the
        first draw it does not fit (nothing taken). ``holder`` names the request (unique
        in this process) so that a shared store can lapse the reservations of a gateway
        that died; several reservations of one holder add up."""
        ...

    async def settle(
        self, draws: tuple[BudgetDraw, ...], reserved: Spend, used: Spend, holder: str = ""
    ) -> None:
        """Release ``reserved`` (``holder``'s) and count ``used`` as spent, on every
        draw; never raises."""
        ...

    async def usage(self, draw: BudgetDraw) -> tuple[Spend, Spend]:
        """(spent, reserved) of ``draw``'s counter right now."""
        ...

    async def close(self) -> None: ...


class MemoryBudgetStore:
    """Budget counters of one gateway process. Check-and-take never suspends, so two
    requests cannot interleave between a check and its reservation; the only await is
    a counter's first ``seed`` (once per subject and period, shared by every request
    that arrives meanwhile)."""

    def __init__(self, seed: Seed | None = None) -> None:
        self._seeds = SeedReads(seed)
        self._spent: dict[str, Spend] = {}
        self._reserved: dict[str, Spend] = {}
        self._ends: dict[str, float] = {}  # counter -> end of its period

    async def _ready(self, draws: tuple[BudgetDraw, ...]) -> None:
        for draw in draws:
            name = draw.counter
            if name in self._spent:
                continue
            spent = await self._seeds.read(draw)
            if name not in self._spent:
                self._forget_ended(draw.window.start)
                self._spent[name] = spent
                self._ends[name] = draw.window.end

    def _forget_ended(self, now: float) -> None:
        """Drop the counters of periods that ended a day before ``now`` (a request that
        began in a period settles in it, so keep them a while)."""
        for name in [n for n, end in self._ends.items() if end < now - 86_400]:
            del self._ends[name]
            self._spent.pop(name, None)
            self._reserved.pop(name, None)

    async def check(self, draws: tuple[BudgetDraw, ...]) -> BudgetDraw | None:
        await self._ready(draws)
        for draw in draws:
            if draw.exhausted(self._spent[draw.counter], self._reserved_of(draw)):
                return draw
        return None

    async def reserve(
        self, draws: tuple[BudgetDraw, ...], amount: Spend, holder: str = ""
    ) -> BudgetDraw | None:
        await self._ready(draws)
        # From here to the end: no await, so the check and the take are one step.
        for draw in draws:
            if not draw.fits(self._spent[draw.counter], self._reserved_of(draw), amount):
                return draw
        for draw in draws:
            self._reserved[draw.counter] = self._reserved_of(draw) + amount
        return None

    async def settle(
        self, draws: tuple[BudgetDraw, ...], reserved: Spend, used: Spend, holder: str = ""
    ) -> None:
        for draw in draws:
            name = draw.counter
            if name not in self._spent:  # its period ended long ago
                continue
            self._reserved[name] = self._reserved_of(draw) - reserved
            self._spent[name] = self._spent[name] + used

    async def usage(self, draw: BudgetDraw) -> tuple[Spend, Spend]:
        await self._ready((draw,))
        return self._spent[draw.counter], self._reserved_of(draw)

    def _reserved_of(self, draw: BudgetDraw) -> Spend:
        return self._reserved.get(draw.counter, Spend())

    async def close(self) -> None:
        pass


def budget_refusal(draw: BudgetDraw) -> BudgetExceededError:
    whose = "key" if draw.subject.startswith("key:") else "tenant"
    period = "today (UTC)" if draw.budget.period is BudgetPeriod.DAY else "this month (UTC)"
    return BudgetExceededError(
        f"You exceeded your current quota: this request would pass your {whose}'s budget "
        f"for {period}. Lower max_tokens or wait for the next period.",
    )


async def budget_report(
    store: BudgetStore, config: TenancyConfig, tenant: str | None, now: float
) -> list[dict[str, Any]]:
    """Every budget of ``config`` (of ``tenant`` only, when given) in its period at
    ``now``: its limits, what is spent and what running requests hold reserved."""
    out = []
    for name, cfg in config.tenants.items():
        if tenant is not None and name != tenant:
            continue
        draws = budget_draws(name, cfg, None, now)
        owners: list[str | None] = [None] * len(draws)
        for key in cfg.keys:
            for draw in budget_draws(None, None, key, now):
                draws += (draw,)
                owners.append(key.id)
        for draw, key_id in zip(draws, owners, strict=True):
            spent, reserved = await store.usage(draw)
            out.append(
                {
                    "tenant": name,
                    "key_id": key_id,
                    "period": draw.budget.period.value,
                    "period_start": int(draw.window.start),
                    "period_end": int(draw.window.end),
                    "max_tokens": draw.budget.max_tokens,
                    "max_cost": draw.budget.max_cost,
                    "spent_tokens": spent.tokens,
                    "spent_cost": spent.cost,
                    "reserved_tokens": reserved.tokens,
                    "reserved_cost": reserved.cost,
                }
            )
    return out
