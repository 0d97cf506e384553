"""Token buckets for requests-per-minute and tokens-per-minute limits."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    """Holds up to ``capacity`` tokens, refilled at ``capacity`` per ``period`` seconds.

    ``try_take`` is all-or-nothing. ``charge`` takes unconditionally and may drive the
    level below zero (completion tokens known only after the fact); later requests
    then wait until it refills. Guarded by a lock: safe from any thread.
    """

    def __init__(
        self, capacity: float, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = float(capacity)
        self.rate = self.capacity / period
        self._clock = clock
        self._level = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_take(self, amount: float) -> float:
        """Take ``amount`` and return 0.0, or take nothing and return seconds to wait."""
        with self._lock:
            self._refill()
            if amount <= self._level:
                self._level -= amount
                return 0.0
            if amount > self.capacity:
                return math.inf
            return (amount - self._level) / self.rate

    def charge(self, amount: float) -> None:
        with self._lock:
            self._refill()
            self._level -= amount


@dataclass(frozen=True)
class Limit:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


class RateLimiter:
    """One request + token bucket pair per subject (a key or a tenant), made on first use.

    ``admit`` checks every subject and takes from all of them only if all have room,
    so a refused request costs nothing anywhere.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str, float], TokenBucket] = {}
        self._lock = threading.Lock()

    def admit(self, limits: dict[str, Limit], tokens: int) -> float:
        """0.0 when admitted (and charged); else the seconds after which to retry."""
        with self._lock:  # all-or-nothing across buckets
            pairs = self._pairs(limits, tokens)
            waits = [bucket.try_take(amount) for bucket, amount in pairs]
            if any(w > 0 for w in waits):
                for (bucket, amount), wait in zip(pairs, waits, strict=True):
                    if wait == 0:
                        bucket.charge(-amount)  # give back what was taken
                return max(waits)
            return 0.0

    def _pairs(self, limits: dict[str, Limit], tokens: int) -> list[tuple[TokenBucket, float]]:
        """The buckets a request draws from; call with ``self._lock`` held."""
        pairs = []
        for subject, limit in limits.items():
            if limit.requests_per_minute:
                pairs.append((self._bucket(subject, "rpm", limit.requests_per_minute), 1.0))
            if limit.tokens_per_minute:
                pairs.append((self._bucket(subject, "tpm", limit.tokens_per_minute), float(tokens)))
        return pairs

    def _bucket(self, subject: str, kind: str, capacity: int) -> TokenBucket:
        key = (subject, kind, float(capacity))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(capacity, clock=self._clock)
        return bucket

    def reserve_more(self, limits: dict[str, Limit], tokens: int) -> float:
        """Take ``tokens`` more from every token bucket, all or nothing: 0.0 when taken,
        else the seconds after which they would fit (``inf``: never)."""
        with self._lock:
            buckets = self._token_buckets(limits)
            waits = [bucket.try_take(tokens) for bucket in buckets]
            if any(w > 0 for w in waits):
                for bucket, wait in zip(buckets, waits, strict=True):
                    if wait == 0:
                        bucket.charge(-tokens)
                return max(waits)
            return 0.0

    def charge_tokens(self, limits: dict[str, Limit], tokens: int) -> None:
        """Charge (or, negative, refund) tokens unconditionally: settling a reservation."""
        with self._lock:
            for bucket in self._token_buckets(limits):
                bucket.charge(tokens)

    def _token_buckets(self, limits: dict[str, Limit]) -> list[TokenBucket]:
        """The token buckets of ``limits``; call with ``self._lock`` held."""
        return [
            self._bucket(subject, "tpm", limit.tokens_per_minute)
            for subject, limit in limits.items()
            if limit.tokens_per_minute
        ]
