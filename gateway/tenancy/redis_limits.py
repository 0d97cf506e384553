"""``RedisLimitStore``: rate limits and in-flight caps shared by every gateway on one Redis.

Token buckets are Redis hashes ``{level, stamp}`` changed only by Lua scripts, so each
change is atomic; one script admits a request (its in-flight slot and all of its
buckets, or nothing) and one settles it (refund or charge, and the slot freed). Time
is Redis's own (``TIME`` inside the script): the gateways' clocks never matter. A
bucket expires once it would have refilled, so an absent bucket is a full one.

In-flight slots are sorted sets, one per tenant, of request slots scored by the
moment their lease ends. Each gateway renews the leases of its running requests every
third of a lease; a gateway that dies stops renewing and its slots lapse within one
lease, freeing them for the others. Slots rather than INCR/DECR counters because a
release is then idempotent (``ZREM`` of one member): a retried or lost command can
never drift a counter, and a lapsed slot needs no per-gateway bookkeeping.

Redis unreachable (or slower than ``timeout``): admission fails closed with a 503
``limits_unavailable``. Shared limits exist to protect shared replicas and tenants'
quotas; a gateway that admitted everything while Redis is down would let one tenant
take the whole fleet exactly when the operators are busy with an outage. Settling a
request that already ran never fails it: a lost refund leaves the bucket charged a
little more, a lost release lapses with its lease.

Keys (``key_prefix`` first): ``bucket:<subject>:<rpm|tpm>:<capacity>`` and
``inflight:<tenant>``. The scripts touch several keys at once: a single Redis (with
replicas/Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.settings import LimitStoreSettings
from gateway.tenancy.limit_store import Entry, InFlightSlot, LimitsUnavailableError
from gateway.tenancy.rate_limit import Limit
from gateway.tenancy.redis_leases import UNREACHABLE, LeaseRenewer

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Admission in one round-trip. KEYS[1]: a tenant's slots; KEYS[2..]: buckets.
# ARGV[1]: refill period (s); ARGV[2]: the slot to take ('': none); ARGV[3]: the cap;
# ARGV[4]: lease (ms); then per bucket: capacity, amount. Returns 'full' (over the cap),
# the longest wait in seconds ('inf': more than a bucket ever holds), both taking
# nothing, or '0': the slot and every amount taken.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[2]
if member ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 'full' end
end
local period = tonumber(ARGV[1])
local levels = {}
local wait = 0
for i = 2, #KEYS do
  local capacity = tonumber(ARGV[2 * i + 1])
  local amount = tonumber(ARGV[2 * i + 2])
  local rate = capacity / period
  local level = capacity
  local state = redis.call('HMGET', KEYS[i], 'level', 'stamp')
  if state[1] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    level = math.min(capacity, tonumber(state[1]) + elapsed * rate)
  end
  levels[i] = level
  if amount > level then
    if amount > capacity then return 'inf' end
    wait = math.max(wait, (amount - level) / rate)
  end
end
if wait > 0 then return tostring(wait) end
for i = 2, #KEYS do
  local capacity = tonumber(ARGV[2 * i + 1])
  local left = levels[i] - tonumber(ARGV[2 * i + 2])
  redis.call('HSET', KEYS[i], 'level', tostring(left), 'stamp', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - left) / capacity * period * 1000) + 1000)
end
if member ~= '' then
  local lease = tonumber(ARGV[4])
  redis.call('ZADD', KEYS[1], now_ms + lease, member)
  redis.call('PEXPIRE', KEYS[1], lease)
end
return '0'
"""

# Settles a request in one round-trip. KEYS[1]: a tenant's slots; KEYS[2..]: buckets.
# ARGV[1]: refill period (s); ARGV[2]: the slot to free ('': none); then per bucket:
# capacity, amount, taken unconditionally (negative: refunded).
_SETTLE = """
if ARGV[2] ~= '' then redis.call('ZREM', KEYS[1], ARGV[2]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local period = tonumber(ARGV[1])
for i = 2, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 1])
  local level = capacity
  local state = redis.call('HMGET', KEYS[i], 'level', 'stamp')
  if state[1] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    level = math.min(capacity, tonumber(state[1]) + elapsed * capacity / period)
  end
  local left = level - tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'level', tostring(left), 'stamp', tostring(now))
  local full_in = math.ceil((capacity - left) / capacity * period * 1000)
  redis.call('PEXPIRE', KEYS[i], math.max(1, full_in) + 1000)
end
return 0
"""


def redis_client(settings: LimitStoreSettings) -> Redis:
    """The client every Redis-backed store of a gateway is built with."""
    return Redis.from_url(
        settings.url.get_secret_value(),
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        # One immediate retry on a dropped connection (Redis restarted), never on a
        # timeout: a script that timed out may have run.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


_Draw = tuple[str, str, int | None, int]
"""(subject, "rpm" | "tpm", capacity, amount): what one request takes from one bucket."""


class RedisLimitStore:
    """A ``LimitStore`` on Redis, shared by every gateway that names the same Redis and
    ``key_prefix``. One per gateway process: its random id names its slots.

    Concurrency rule: event-loop only. ``release`` and ``charge_tokens`` are shielded
    (they finish even when the request's task is cancelled) and never raise; the lease
    renewal runs as one background task, started with the first capped slot.
    """

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = "loragate:",
        lease_seconds: float = 30.0,
        period: float = 60.0,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._period = period
        self.gateway_id = uuid.uuid4().hex[:16]
        self._seq = itertools.count()
        self.leases = LeaseRenewer(
            client, self._lease_ms, expire_sets=True, what="in-flight leases"
        )
        self._pending: set[asyncio.Task[Any]] = set()
        self._failing = False
        self._admit = client.register_script(_ADMIT)
        self._settle_script = client.register_script(_SETTLE)

    @classmethod
    def from_settings(cls, settings: LimitStoreSettings) -> RedisLimitStore:
        return cls(
            redis_client(settings),
            key_prefix=settings.key_prefix,
            lease_seconds=settings.lease_seconds,
        )

    # -- admission and settlement -------------------------------------------------

    async def enter(
        self, key: str, cap: int | None, limits: dict[str, Limit], tokens: int
    ) -> Entry:
        draws = self._draws(limits, tokens)
        if cap is None:  # no slot to share: the buckets alone, if any
            wait = await self._take(None, 0, draws)
            return Entry(InFlightSlot(key) if wait == 0 else None, wait)
        member = f"{self.gateway_id}:{next(self._seq)}"
        wait = await self._take(InFlightSlot(key, member), cap, draws)
        if wait != 0:
            return Entry(None, max(wait, 0.0))  # -1: over the cap
        self.leases.hold(self._slots_key(key), member)
        return Entry(InFlightSlot(key, member))

    async def admit(self, limits: dict[str, Limit], tokens: int) -> float:
        return await self._take(None, 0, self._draws(limits, tokens))

    async def reserve_more(self, limits: dict[str, Limit], tokens: int) -> float:
        return await self._take(None, 0, self._token_pairs(limits, tokens))

    def _draws(self, limits: dict[str, Limit], tokens: int) -> list[_Draw]:
        draws: list[_Draw] = [(s, "rpm", lim.requests_per_minute, 1) for s, lim in limits.items()]
        draws += [(s, "tpm", lim.tokens_per_minute, tokens) for s, lim in limits.items()]
        return [draw for draw in draws if draw[2]]

    async def _take(self, slot: InFlightSlot | None, cap: int, draws: list[_Draw]) -> float:
        """0.0: taken; -1.0: over the in-flight cap; else seconds to wait (``inf``)."""
        member = slot.member if slot is not None else None
        if member is None and not draws:
            return 0.0
        slots = self._slots_key(slot.key) if slot is not None else f"{self._prefix}inflight:"
        keys, args = self._bucket_args(draws)
        argv: list[str | float] = [self._period, member or "", cap, self._lease_ms, *args]
        answer = await self._guarded(lambda: self._admit(keys=[slots, *keys], args=argv))
        return -1.0 if answer == b"full" else float(answer)

    async def charge_tokens(self, limits: dict[str, Limit], tokens: int) -> None:
        if tokens and limits:
            await self._settle(None, self._token_pairs(limits, tokens))

    async def release(self, slot: InFlightSlot, limits: dict[str, Limit], tokens: int) -> None:
        if slot.member is not None:
            self.leases.release(self._slots_key(slot.key), slot.member)
        await self._settle(slot, self._token_pairs(limits, tokens) if tokens else [])

    def _token_pairs(self, limits: dict[str, Limit], tokens: int) -> list[_Draw]:
        return [
            (s, "tpm", lim.tokens_per_minute, tokens)
            for s, lim in limits.items()
            if lim.tokens_per_minute
        ]

    def _bucket_args(self, draws: list[_Draw]) -> tuple[list[str], list[float]]:
        keys = [f"{self._prefix}bucket:{subject}:{kind}:{cap}" for subject, kind, cap, _ in draws]
        args: list[float] = []
        for _, _, cap, amount in draws:
            args += [float(cap or 0), float(amount)]
        return keys, args

    async def _settle(self, slot: InFlightSlot | None, draws: list[_Draw]) -> None:
        """Free ``slot`` and charge ``draws`` in one script, run to its end even if the
        caller is cancelled (it is shielded); a failure is logged, never raised."""
        member = slot.member if slot is not None else None
        if member is None and not draws:
            return
        slots = self._slots_key(slot.key) if slot is not None else f"{self._prefix}inflight:"
        keys, args = self._bucket_args(draws)

        async def run() -> None:
            try:
                await self._settle_script(
                    keys=[slots, *keys], args=[self._period, member or "", *args]
                )
            except UNREACHABLE as exc:
                logger.warning("could not settle limits on Redis: %s", exc)

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        await asyncio.shield(task)

    # -- in-flight leases ---------------------------------------------------------

    def _slots_key(self, key: str) -> str:
        return f"{self._prefix}inflight:{key}"

    async def close(self) -> None:
        """Stop renewing, hand back the slots still held here, close the connections."""
        held = await self.leases.stop()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        try:
            if held:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key, members in held.items():
                        pipe.zrem(key, *members)
                    await pipe.execute()
        except UNREACHABLE:
            logger.warning("could not release in-flight slots on Redis at shutdown")
        await self._client.aclose()

    # -- failure handling ---------------------------------------------------------

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis call for admission: unreachable -> 503 ``limits_unavailable``."""
        try:
            result = await call()
        except UNREACHABLE as exc:
            if not self._failing:
                logger.error("Redis limit store unreachable: refusing requests (%s)", exc)
            self._failing = True
            raise LimitsUnavailableError() from None
        if self._failing:
            logger.info("Redis limit store reachable again")
            self._failing = False
        return result
