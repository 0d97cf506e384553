"""Which replica serves a request: rendezvous hashing with bounded load.

Every adapter ranks the replicas by a hash of (adapter, replica) - highest random
weight, so all gateways agree without talking, and a replica joining or leaving moves
only the adapters whose top choice it is. An adapter's requests go to its first
(home) replica; a further replica in its ranking takes new requests only while the
ones before it are full, never more than ``max_replicas`` replicas. A replica is full
for an adapter when it holds ``spill_threshold`` of the adapter's requests, or when all
its requests in flight reach the bound ``max(balance_floor, ceil(balance_factor x
(requests in flight on all replicas + 1) / replicas))`` (consistent hashing with
bounded loads, Mirrokni et al. 2018; HAProxy's ``hash-balance-factor``): without it,
hashing that happens to home most popular adapters on one replica leaves the other
idle (measured on CPU replicas: 43 of 48 requests on one of two). ``balance_floor``
keeps locality first while a replica is not busy (on a GPU a batch of a few more
sequences costs little, a load and a slot cost more); 0 balances from the first
request, which suits CPU replicas. The base
model has no locality to keep: its requests go to the least-loaded replica.

``RoundRobin`` is the baseline without locality (``engine.placement: round_robin``):
every request goes to the next replica in turn, which loads the adapter on demand.
Both answer the ``Placement`` protocol that ``RemoteEngine`` asks.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Protocol


def weight(key: str, replica: str) -> int:
    """The rendezvous weight of ``replica`` for ``key`` (stable across processes)."""
    digest = hashlib.blake2b(f"{key}\x00{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranking(key: str, replicas: Sequence[str]) -> list[str]:
    """``replicas`` in ``key``'s order of preference (its home replica first)."""
    return sorted(replicas, key=lambda r: weight(key, r), reverse=True)


class Placement(Protocol):
    """Picks the replica (by URL) for a new request; ``None`` when there is none."""

    def for_adapter(
        self,
        key: str,
        replicas: Sequence[str],
        in_flight: Callable[[str], int],
        load: Callable[[str], int],
    ) -> str | None:
        """``in_flight``: the adapter's requests on a replica; ``load``: all of them."""

    def for_base(self, replicas: Sequence[str], in_flight: Callable[[str], int]) -> str | None: ...


class BoundedLoad:
    """The placement rule: ``max_replicas`` per adapter, spill at ``spill_threshold`` or
    past the balance bound (``balance_factor``, ``balance_floor``; large: locality only)."""

    def __init__(
        self,
        max_replicas: int = 2,
        spill_threshold: int = 8,
        balance_factor: float = 1.25,
        balance_floor: int = 8,
    ) -> None:
        self.max_replicas = max_replicas
        self.spill_threshold = spill_threshold
        self.balance_factor = balance_factor
        self.balance_floor = balance_floor
        self._ties = itertools.count()

    def for_adapter(
        self,
        key: str,
        replicas: Sequence[str],
        in_flight: Callable[[str], int],
        load: Callable[[str], int],
    ) -> str | None:
        """The replica for a new request of adapter ``key``; ``None`` when there is none."""
        allowed = ranking(key, replicas)[: self.max_replicas]
        if not allowed:
            return None
        total = sum(load(r) for r in replicas)
        bound = max(
            self.balance_floor, math.ceil(self.balance_factor * (total + 1) / len(replicas))
        )
        for replica in allowed:
            if in_flight(replica) < self.spill_threshold and load(replica) < bound:
                return replica
        # Every allowed replica is full: the least busy of them.
        return min(allowed, key=load)

    def for_base(self, replicas: Sequence[str], in_flight: Callable[[str], int]) -> str | None:
        """The least-loaded replica (``in_flight``: all its requests); ties rotate."""
        if not replicas:
            return None
        start = next(self._ties) % len(replicas)
        rotated = [*replicas[start:], *replicas[:start]]
        return min(rotated, key=in_flight)


class RoundRobin:
    """Every request, adapter or base, to the next replica in turn (no affinity)."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def for_adapter(
        self,
        key: str,
        replicas: Sequence[str],
        in_flight: Callable[[str], int],
        load: Callable[[str], int],
    ) -> str | None:
        return self.for_base(replicas, load)

    def for_base(self, replicas: Sequence[str], in_flight: Callable[[str], int]) -> str | None:
        if not replicas:
            return None
        return replicas[next(self._turn) % len(replicas)]
