"""``MissMemory``: each tenant's remembered misses bounded on their own, tenants bounded,
entries expiring (a fake clock)."""

from __future__ import annotations

from adapters.errors import UnsafeArchiveError
from gateway.adapter_runtime.miss_memory import MissMemory


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_fills_only_its_own_memory() -> None:
    memory = MissMemory(30, per_tenant=2, max_tenants=10, clock=Clock())
    memory.remember("b", "ghost", None)
    for i in range(50):
        memory.remember("a", f"flood-{i}", None)
    assert memory.get("b", "ghost") is not None
    assert memory.get("a", "flood-49") is not None and memory.get("a", "flood-48") is not None
    assert memory.get("a", "flood-47") is None  # a's oldest went, not b's
    assert (len(memory), memory.tenants) == (3, 2)


def test_past_max_tenants_the_least_recent_tenant_is_forgotten_whole() -> None:
    memory = MissMemory(30, per_tenant=5, max_tenants=2, clock=Clock())
    memory.remember("a", "x", None)
    memory.remember("a", "y", None)
    memory.remember("b", "x", None)
    memory.remember("a", "z", None)  # a missed more recently than b
    memory.remember("c", "x", None)
    assert memory.get("b", "x") is None
    assert memory.get("a", "x") is not None and memory.get("c", "x") is not None
    assert memory.tenants == 2


def test_misses_expire_and_keep_their_refusal() -> None:
    clock = Clock()
    memory = MissMemory(30, per_tenant=5, max_tenants=5, clock=clock)
    refusal = UnsafeArchiveError("too large", code="archive_too_large")
    memory.remember("a", "big", refusal)
    miss = memory.get("a", "big")
    assert miss is not None and miss.error is not None and miss.until == 130.0
    assert type(miss.error) is UnsafeArchiveError
    assert miss.error.to_openai() == refusal.to_openai()
    clock.now = 130.0
    assert memory.get("a", "big") is None
    assert (len(memory), memory.tenants) == (0, 0)


def test_a_zero_ttl_remembers_nothing() -> None:
    memory = MissMemory(0, per_tenant=5, max_tenants=5, clock=Clock())
    memory.remember("a", "x", None)
    assert memory.get("a", "x") is None and len(memory) == 0
