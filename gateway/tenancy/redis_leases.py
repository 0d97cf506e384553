"""``LeaseRenewer``: the leases a gateway holds in Redis sorted sets, kept alive.

Both Redis stores lease what a running request holds (an in-flight slot, a budget
reservation) as a member of a sorted set scored by the moment its lease ends; another
gateway's next call treats a lapsed member as released. The gateway that holds them
renews every member still running here every third of a lease, in one script call for
all its sets, so a gateway that dies stops renewing and what it held lapses within one
lease.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)
"""What a Redis call raises when the server cannot answer (the caller fails closed)."""

# KEYS: sorted sets of leases. ARGV[1]: lease (ms); ARGV[2]: '1' to push back each set's
# own expiry to one lease as well; then per key: how many members, the members still
# running here. Only members still present are renewed (XX): one released meanwhile
# stays released.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local expire = ARGV[2] == '1'
local at = 3
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  for i = at + 1, at + n do
    redis.call('ZADD', key, 'XX', now + lease, ARGV[i])
  end
  at = at + n + 1
  if expire and redis.call('EXISTS', key) == 1 then redis.call('PEXPIRE', key, lease) end
end
return 0
"""


class LeaseRenewer:
    """The members held here per sorted set, and the one background task renewing them.

    ``expire_sets``: also push back each set's own expiry to one lease (in-flight
    slots: a tenant's set lapses with its last lease); False leaves a set's expiry as
    its store set it (budget leases expire with their counter, a day after its period).
    Concurrency rule: event-loop only; the task starts with the first ``hold`` and
    ends when nothing is held.
    """

    def __init__(self, client: Redis, lease_ms: int, *, expire_sets: bool, what: str) -> None:
        self._renew = client.register_script(_RENEW)
        self._lease_ms = lease_ms
        self._expire = "1" if expire_sets else "0"
        self._what = what
        self.held: dict[str, set[str]] = {}
        """Sorted set -> members running here."""
        self._task: asyncio.Task[None] | None = None

    def hold(self, key: str, member: str) -> None:
        self.held.setdefault(key, set()).add(member)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._renew_forever())

    def release(self, key: str, member: str) -> None:
        members = self.held.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self.held[key]

    async def renew_once(self) -> None:
        held = {key: sorted(members) for key, members in self.held.items() if members}
        if not held:
            return
        args: list[str | int] = [self._lease_ms, self._expire]
        for members in held.values():
            args += [len(members), *members]
        await self._renew(keys=list(held), args=args)

    async def _renew_forever(self) -> None:
        """Every third of a lease, push back the lease of every member held here."""
        while self.held:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self.renew_once()
            except UNREACHABLE:
                logger.warning("could not renew %s on Redis", self._what)

    async def stop(self) -> dict[str, set[str]]:
        """Stop renewing; what was still held (its leases lapse unless released)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        held, self.held = self.held, {}
        return held
