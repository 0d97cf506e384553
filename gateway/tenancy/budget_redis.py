"""``RedisBudgetStore``: budget counters shared by every gateway on one Redis.

One hash per budget and period, ``<key_prefix>budget:<subject>:<period>`` with the spent
and reserved tokens and cost (``st sc rt rc``), changed only by Lua scripts, so a check
and its reservation are one atomic step across every gateway: however many requests
race, ``spent + reserved`` never passes a budget. A counter that does not exist yet is
created from the ``seed`` the gateway sends (the usage store's spend for the period);
it expires a day after its period ends (a request that began in a period settles in
it).

Redis unreachable (or slower than ``timeout``): admission fails closed with a 503
``limits_unavailable``, as the shared rate limits do. A settlement that cannot reach
Redis is logged: its reservation stays counted until the period ends (the budget errs
on the side of refusing), as does the reservation of a gateway that dies mid-request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.config import LimitStoreSettings
from gateway.tenancy.budget import COST_SLACK, BudgetDraw, Seed, Spend
from gateway.tenancy.limit_store import LimitsUnavailableError

logger = logging.getLogger(__name__)

GRACE_SECONDS = 86_400
"""How long a counter outlives its period."""

MAX_SEEDS = 10_000
"""Seeds kept per process (one per budget and period)."""

# KEYS: the counters. ARGV[1]: 'check' (is any budget spent?) or 'reserve'; ARGV[2],
# ARGV[3]: tokens and cost to reserve; ARGV[4]: cost slack; then per counter: max tokens
# and max cost ('' for none), seed tokens and cost, expiry (unix seconds). Returns the
# 1-based index of the first counter that refuses (nothing taken), or 0.
_RESERVE = """
local mode = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local slack = tonumber(ARGV[4])
for i, key in ipairs(KEYS) do
  local at = 5 * i
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'st', ARGV[at + 2], 'sc', ARGV[at + 3], 'rt', 0, 'rc', 0)
    redis.call('EXPIREAT', key, ARGV[at + 4])
  end
  local v = redis.call('HMGET', key, 'st', 'sc', 'rt', 'rc')
  local used_t = tonumber(v[1]) + tonumber(v[3])
  local used_c = tonumber(v[2]) + tonumber(v[4])
  local max_t, max_c = ARGV[at], ARGV[at + 1]
  if mode == 'check' then
    if max_t ~= '' and used_t >= tonumber(max_t) then return i end
    if max_c ~= '' and used_c >= tonumber(max_c) - slack then return i end
  else
    if max_t ~= '' and used_t + tokens > tonumber(max_t) then return i end
    if max_c ~= '' and used_c + cost > tonumber(max_c) + slack then return i end
  end
end
if mode == 'reserve' then
  for _, key in ipairs(KEYS) do
    redis.call('HINCRBY', key, 'rt', tokens)
    redis.call('HINCRBYFLOAT', key, 'rc', cost)
  end
end
return 0
"""

# KEYS: the counters. ARGV: reserved tokens and cost (released), used tokens and cost
# (spent). A counter that expired meanwhile is left alone.
_SETTLE = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'rt', -tonumber(ARGV[1]))
    redis.call('HINCRBYFLOAT', key, 'rc', -tonumber(ARGV[2]))
    redis.call('HINCRBY', key, 'st', tonumber(ARGV[3]))
    redis.call('HINCRBYFLOAT', key, 'sc', tonumber(ARGV[4]))
  end
end
return 0
"""

_UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)


class RedisBudgetStore:
    """A ``BudgetStore`` on Redis, shared by every gateway naming the same Redis and
    ``key_prefix``.

    Concurrency rule: event-loop only. ``settle`` is shielded (it finishes even when the
    request's task is cancelled) and never raises. Each counter's seed is read once per
    process (and per period) and sent with every call: Redis uses it only to create a
    counter that is missing.
    """

    def __init__(self, client: Redis, *, key_prefix: str = "loragate:", seed: Seed | None = None):
        self._client = client
        self._prefix = key_prefix
        self._seed = seed
        self._seeds: dict[str, Spend] = {}
        self._seeding: dict[str, asyncio.Future[Spend]] = {}
        self._pending: set[asyncio.Task[Any]] = set()
        self._failing = False
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    @classmethod
    def from_settings(cls, settings: LimitStoreSettings, seed: Seed | None) -> RedisBudgetStore:
        client = Redis.from_url(
            settings.url.get_secret_value(),
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        return cls(client, key_prefix=settings.key_prefix, seed=seed)

    def key(self, draw: BudgetDraw) -> str:
        return f"{self._prefix}budget:{draw.counter}"

    async def check(self, draws: tuple[BudgetDraw, ...]) -> BudgetDraw | None:
        return await self._run("check", draws, Spend())

    async def reserve(self, draws: tuple[BudgetDraw, ...], amount: Spend) -> BudgetDraw | None:
        return await self._run("reserve", draws, amount)

    async def _run(
        self, mode: str, draws: tuple[BudgetDraw, ...], amount: Spend
    ) -> BudgetDraw | None:
        args: list[str | int | float] = [mode, amount.tokens, repr(amount.cost), repr(COST_SLACK)]
        for draw in draws:
            seed = await self._seed_of(draw)
            budget = draw.budget
            args += [
                "" if budget.max_tokens is None else budget.max_tokens,
                "" if budget.max_cost is None else repr(budget.max_cost),
                seed.tokens,
                repr(seed.cost),
                int(draw.window.end) + GRACE_SECONDS,
            ]
        keys = [self.key(draw) for draw in draws]
        try:
            answer = await self._reserve(keys=keys, args=args)
        except _UNREACHABLE as exc:
            if not self._failing:
                logger.error("Redis budget store unreachable: refusing requests (%s)", exc)
            self._failing = True
            raise LimitsUnavailableError() from None
        self._failing = False
        index = int(answer)
        return draws[index - 1] if index else None

    async def _seed_of(self, draw: BudgetDraw) -> Spend:
        name = draw.counter
        known = self._seeds.get(name)
        if known is not None:
            return known
        pending = self._seeding.get(name)
        if pending is None:
            pending = self._seeding[name] = asyncio.ensure_future(self._first(draw))
        try:
            spent = await asyncio.shield(pending)
        finally:
            if pending.done():
                self._seeding.pop(name, None)
        if len(self._seeds) >= MAX_SEEDS:
            self._seeds.clear()  # read again on next use: bounds memory, changes nothing
        self._seeds[name] = spent
        return spent

    async def _first(self, draw: BudgetDraw) -> Spend:
        return await self._seed(draw) if self._seed is not None else Spend()

    async def settle(self, draws: tuple[BudgetDraw, ...], reserved: Spend, used: Spend) -> None:
        keys = [self.key(draw) for draw in draws]
        args: list[str | int] = [reserved.tokens, repr(reserved.cost), used.tokens, repr(used.cost)]

        async def run() -> None:
            try:
                await self._settle(keys=keys, args=args)
            except _UNREACHABLE as exc:
                logger.warning("could not settle budgets on Redis: %s", exc)

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def usage(self, draw: BudgetDraw) -> tuple[Spend, Spend]:
        await self.check((draw,))  # creates the counter from its seed if missing
        st, sc, rt, rc = await self._client.hmget(self.key(draw), ["st", "sc", "rt", "rc"])
        return Spend(int(st or 0), float(sc or 0)), Spend(int(rt or 0), float(rc or 0))

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()
