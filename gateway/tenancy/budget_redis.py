"""``RedisBudgetStore``: budget counters shared by every gateway on one Redis.

One hash per budget and period, ``<key_prefix>budget:<subject>:<period>`` with the spent
and reserved tokens and cost (``st sc rt rc``), changed only by Lua scripts, so a check
and its reservation are one atomic step across every gateway: however many requests
race, ``spent + reserved`` never passes a budget. A counter that does not exist yet is
created from the ``seed`` the gateway sends (the usage store's spend for the period);
it expires a day after its period ends (a request that began in a period settles in
it).

Each reservation is also recorded under its holder (``<gateway id>:<request>``) in a
sorted set of leases beside the counter. The gateway renews the leases of its running
requests every third of a lease (``limits_store.lease_seconds``); a gateway that dies
stops renewing, and the next call on the counter releases its reservations once their
lease has lapsed. A settlement releases its holder's reservation exactly once (a lapsed
one was released already) and always counts what was used.

Redis unreachable (or slower than ``timeout``): admission fails closed with a 503
``limits_unavailable``, as the shared rate limits do. A settlement that cannot reach
Redis is logged: its reservation lapses with its lease, and its use is not counted.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from redis.asyncio import Redis

from gateway.settings import LimitStoreSettings
from gateway.tenancy.budget import COST_SLACK, BudgetDraw, Seed, SeedReads, Spend
from gateway.tenancy.limit_store import LimitsUnavailableError
from gateway.tenancy.redis_leases import UNREACHABLE, LeaseRenewer
from gateway.tenancy.redis_limits import redis_client

logger = logging.getLogger(__name__)

GRACE_SECONDS = 86_400
"""How long a counter outlives its period."""

MAX_SEEDS = 10_000
"""Seeds kept per process (one per budget and period)."""

# KEYS: per budget, its counter and its holders' leases. ARGV[1]: 'check' (is any budget
# spent?) or 'reserve'; ARGV[2], ARGV[3]: tokens and cost to reserve; ARGV[4]: cost
# slack; ARGV[5]: the holder ('' for none); ARGV[6]: lease (ms); then per budget: max
# tokens and max cost ('' for none), seed tokens and cost, expiry (unix seconds).
# Lapsed leases are released first. Returns the 1-based index of the first budget that
# refuses (nothing taken), or 0.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mode = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local slack = tonumber(ARGV[4])
local holder = ARGV[5]
local n = #KEYS / 2
for i = 1, n do
  local key, held, at = KEYS[2 * i - 1], KEYS[2 * i], 7 + 5 * (i - 1)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'st', ARGV[at + 2], 'sc', ARGV[at + 3], 'rt', 0, 'rc', 0)
    redis.call('EXPIREAT', key, ARGV[at + 4])
  end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', held, '-inf', now)) do
    local amt = redis.call('HMGET', key, 't:' .. m, 'c:' .. m)
    redis.call('HINCRBY', key, 'rt', 0 - tonumber(amt[1] or 0))
    redis.call('HINCRBYFLOAT', key, 'rc', 0 - tonumber(amt[2] or 0))
    redis.call('HDEL', key, 't:' .. m, 'c:' .. m)
    redis.call('ZREM', held, m)
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
  for i = 1, n do
    local key, held = KEYS[2 * i - 1], KEYS[2 * i]
    redis.call('HINCRBY', key, 'rt', tokens)
    redis.call('HINCRBYFLOAT', key, 'rc', cost)
    if holder ~= '' then
      redis.call('HINCRBY', key, 't:' .. holder, tokens)
      redis.call('HINCRBYFLOAT', key, 'c:' .. holder, cost)
      redis.call('ZADD', held, now + tonumber(ARGV[6]), holder)
      redis.call('EXPIREAT', held, ARGV[7 + 5 * (i - 1) + 4])
    end
  end
end
return 0
"""

# KEYS: per budget, its counter and its holders' leases. ARGV: the holder ('' for none),
# reserved tokens and cost, used tokens and cost. A holder's reservation is released
# once, as it was recorded (a lapsed one was released already); the use is always
# counted. A counter that expired meanwhile is left alone.
_SETTLE = """
local holder = ARGV[1]
for i = 1, #KEYS, 2 do
  local key, held = KEYS[i], KEYS[i + 1]
  if redis.call('EXISTS', key) == 1 then
    local rt, rc = tonumber(ARGV[2]), tonumber(ARGV[3])
    if holder ~= '' then
      rt, rc = 0, 0
      if redis.call('ZREM', held, holder) == 1 then
        local amt = redis.call('HMGET', key, 't:' .. holder, 'c:' .. holder)
        rt, rc = tonumber(amt[1] or 0), tonumber(amt[2] or 0)
        redis.call('HDEL', key, 't:' .. holder, 'c:' .. holder)
      end
    end
    redis.call('HINCRBY', key, 'rt', 0 - rt)  -- not -rt: Lua writes -0 as "-0"
    redis.call('HINCRBYFLOAT', key, 'rc', 0 - rc)
    redis.call('HINCRBY', key, 'st', tonumber(ARGV[4]))
    redis.call('HINCRBYFLOAT', key, 'sc', tonumber(ARGV[5]))
  end
end
return 0
"""


class RedisBudgetStore:
    """A ``BudgetStore`` on Redis, shared by every gateway naming the same Redis and
    ``key_prefix``. One per gateway process: its random id names its holders.

    Concurrency rule: event-loop only. ``settle`` is shielded (it finishes even when the
    request's task is cancelled) and never raises. Each counter's seed is read once per
    process (and per period) and sent with every call: Redis uses it only to create a
    counter that is missing. The lease renewal runs as one background task, started
    with the first reservation.
    """

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = "loragate:",
        seed: Seed | None = None,
        lease_seconds: float = 30.0,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self.gateway_id = uuid.uuid4().hex[:16]
        self._seeds: dict[str, Spend] = {}
        self._seed_reads = SeedReads(seed)
        # A lease set expires with its counter (``EXPIREAT`` in ``_RESERVE``), not
        # with its last lease.
        self.leases = LeaseRenewer(
            client, self._lease_ms, expire_sets=False, what="budget reservations"
        )
        self._pending: set[asyncio.Task[Any]] = set()
        self._failing = False
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    @classmethod
    def from_settings(cls, settings: LimitStoreSettings, seed: Seed | None) -> RedisBudgetStore:
        return cls(
            redis_client(settings),
            key_prefix=settings.key_prefix,
            seed=seed,
            lease_seconds=settings.lease_seconds,
        )

    def key(self, draw: BudgetDraw) -> str:
        return f"{self._prefix}budget:{draw.counter}"

    def _keys(self, draws: tuple[BudgetDraw, ...]) -> list[str]:
        keys = []
        for draw in draws:
            keys += [self.key(draw), f"{self.key(draw)}:held"]
        return keys

    def _member(self, holder: str) -> str:
        return f"{self.gateway_id}:{holder}" if holder else ""

    async def check(self, draws: tuple[BudgetDraw, ...]) -> BudgetDraw | None:
        return await self._run("check", draws, Spend(), "")

    async def reserve(
        self, draws: tuple[BudgetDraw, ...], amount: Spend, holder: str = ""
    ) -> BudgetDraw | None:
        refused = await self._run("reserve", draws, amount, self._member(holder))
        if refused is None and holder:
            for lease in self._keys(draws)[1::2]:
                self.leases.hold(lease, self._member(holder))
        return refused

    async def _run(
        self, mode: str, draws: tuple[BudgetDraw, ...], amount: Spend, member: str
    ) -> BudgetDraw | None:
        args: list[str | int | float] = [
            mode,
            amount.tokens,
            repr(amount.cost),
            repr(COST_SLACK),
            member,
            self._lease_ms,
        ]
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
        try:
            answer = await self._reserve(keys=self._keys(draws), args=args)
        except UNREACHABLE as exc:
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
        spent = await self._seed_reads.read(draw)
        if len(self._seeds) >= MAX_SEEDS:
            self._seeds.clear()  # read again on next use: bounds memory, changes nothing
        self._seeds[name] = spent
        return spent

    async def settle(
        self, draws: tuple[BudgetDraw, ...], reserved: Spend, used: Spend, holder: str = ""
    ) -> None:
        keys = self._keys(draws)
        member = self._member(holder)
        for lease in keys[1::2] if member else ():
            self.leases.release(lease, member)
        args: list[str | int] = [
            member,
            reserved.tokens,
            repr(reserved.cost),
            used.tokens,
            repr(used.cost),
        ]

        async def run() -> None:
            try:
                await self._settle(keys=keys, args=args)
            except UNREACHABLE as exc:
                logger.warning("could not settle budgets on Redis: %s", exc)

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    async def usage(self, draw: BudgetDraw) -> tuple[Spend, Spend]:
        await self.check((draw,))  # creates the counter, releases lapsed leases
        st, sc, rt, rc = await self._client.hmget(self.key(draw), ["st", "sc", "rt", "rc"])
        return Spend(int(st or 0), float(sc or 0)), Spend(int(rt or 0), float(rc or 0))

    async def close(self) -> None:
        """Stop renewing (reservations still held lapse), finish settlements, close."""
        await self.leases.stop()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self._client.aclose()
