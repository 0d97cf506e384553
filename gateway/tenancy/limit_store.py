"""``LimitStore``: where rate-limit buckets and in-flight counts live.

    MemoryLimitStore   one gateway process (the default): exact, no I/O
    RedisLimitStore    every gateway on one Redis (``gateway.tenancy.redis_limits``)

The ``Gatekeeper`` is the only caller. Both stores keep the same rules: a request draws
from all of its buckets or from none ("a refused request costs nothing anywhere"),
``admit`` and ``reserve_more`` answer 0.0 or the seconds after which to retry (``inf``:
never fits), and ``charge_tokens`` / ``release`` never fail a request that already ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.errors import GatewayError
from gateway.tenancy.admission import InFlightLimiter
from gateway.tenancy.rate_limit import Limit, RateLimiter


class LimitsUnavailableError(GatewayError):
    """503: the shared limit store cannot be reached, so nothing is admitted (fail closed).

    It extends ``gateway.errors``' tree next to ``EngineUnavailableError``::

        GatewayError
        └── LimitsUnavailableError  503 service_unavailable  (code: limits_unavailable)
    """

    status_code = 503
    error_type = "service_unavailable"
    default_code = "limits_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "Rate limits cannot be checked right now. Retry shortly.",
            headers={"Retry-After": "1"},
        )


@dataclass(frozen=True)
class InFlightSlot:
    """One request's place under its tenant's in-flight cap (``member``: the store's own
    handle for it; ``None`` when nothing was recorded, e.g. no cap in a shared store)."""

    key: str
    member: str | None = None


@dataclass(frozen=True)
class Entry:
    """What ``LimitStore.enter`` decided: admitted with ``slot``, or refused (``slot`` is
    None) over the in-flight cap (``wait`` 0) or by a bucket (``wait``: seconds to retry,
    ``inf``: never fits). A refused request took nothing."""

    slot: InFlightSlot | None
    wait: float = 0.0


class LimitStore(Protocol):
    """Rate-limit buckets and in-flight caps, for one gateway or shared by several.

    Concurrency rule: called from the event loop. ``release`` and ``charge_tokens`` run
    in ``finally`` blocks of cancelled requests: an implementation that does I/O must
    finish them even when its caller is cancelled (shield them).
    """

    async def enter(
        self, key: str, cap: int | None, limits: dict[str, Limit], tokens: int
    ) -> Entry:
        """Admission: a slot under ``key``'s in-flight ``cap`` (checked first), then one
        request plus ``tokens`` from every bucket of ``limits``; all of it or nothing."""
        ...

    async def admit(self, limits: dict[str, Limit], tokens: int) -> float:
        """One request plus ``tokens`` from every bucket of ``limits`` (no slot), all or
        nothing: 0.0 when taken, else the seconds after which it would fit (``inf``)."""
        ...

    async def reserve_more(self, limits: dict[str, Limit], tokens: int) -> float:
        """``tokens`` more from every token bucket, all or nothing (answer as ``admit``)."""
        ...

    async def charge_tokens(self, limits: dict[str, Limit], tokens: int) -> None:
        """Charge (negative: refund) tokens unconditionally; never raises."""
        ...

    async def release(self, slot: InFlightSlot, limits: dict[str, Limit], tokens: int) -> None:
        """Settle a request: charge ``tokens`` (may be negative or 0) and free its slot;
        never raises."""
        ...

    async def close(self) -> None:
        """Free this gateway's slots still held and close connections (at shutdown)."""
        ...


class MemoryLimitStore:
    """The limits of one gateway process, in memory: no I/O, so no method suspends and
    a check and its increment can never interleave with another request."""

    def __init__(
        self, rate_limiter: RateLimiter | None = None, in_flight: InFlightLimiter | None = None
    ) -> None:
        self.rate_limiter = rate_limiter or RateLimiter()
        self.in_flight = in_flight or InFlightLimiter()

    async def enter(
        self, key: str, cap: int | None, limits: dict[str, Limit], tokens: int
    ) -> Entry:
        if not self.in_flight.try_enter(key, cap):
            return Entry(None)
        wait = self.rate_limiter.admit(limits, tokens) if limits else 0.0
        if wait > 0:
            self.in_flight.leave(key)
            return Entry(None, wait)
        return Entry(InFlightSlot(key))

    async def admit(self, limits: dict[str, Limit], tokens: int) -> float:
        return self.rate_limiter.admit(limits, tokens)

    async def reserve_more(self, limits: dict[str, Limit], tokens: int) -> float:
        return self.rate_limiter.reserve_more(limits, tokens)

    async def charge_tokens(self, limits: dict[str, Limit], tokens: int) -> None:
        self.rate_limiter.charge_tokens(limits, tokens)

    async def release(self, slot: InFlightSlot, limits: dict[str, Limit], tokens: int) -> None:
        if limits and tokens:
            self.rate_limiter.charge_tokens(limits, tokens)
        self.in_flight.leave(slot.key)

    async def close(self) -> None:
        pass
