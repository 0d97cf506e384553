"""``engine.placement: round_robin``: the no-affinity baseline of benchmark 3.

Against the fake replicas of ``test_remote_engine_units``: requests rotate over the
replicas whatever their adapter, and each replica loads an adapter the first time a
request for it lands there (on demand, once).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.engine.remote.placement import BoundedLoad, RoundRobin
from gateway.engine.remote.startup import build_remote_engine, discover_base, placement_for
from tests.support.fake_replica import (
    FakeReplica,
    ServedReplica,
    adapter,
    collect,
    gen_request,
    remote_settings,
)


@pytest.fixture(scope="module")
def pair() -> Iterator[list[FakeReplica]]:
    served = [ServedReplica() for _ in range(2)]
    yield [s.fake for s in served]
    for s in served:
        s.stop()


def test_round_robin_rotates_and_ignores_the_adapter() -> None:
    policy = RoundRobin()
    urls = ["http://a", "http://b", "http://c"]
    picks = [policy.for_adapter(f"x{i % 2}", urls, lambda _: 0, lambda _: 0) for i in range(6)]
    assert picks == urls * 2
    assert policy.for_base([], lambda _: 0) is None


def test_the_setting_picks_the_policy(pair: list[FakeReplica]) -> None:
    assert isinstance(placement_for(remote_settings(pair)), BoundedLoad)
    rr = remote_settings(pair, placement="round_robin")
    assert isinstance(placement_for(rr), RoundRobin)


async def test_round_robin_loads_adapters_on_demand_on_every_replica(
    pair: list[FakeReplica],
) -> None:
    for fake in pair:
        fake.reset()
    settings = remote_settings(pair, placement="round_robin")
    engine = build_remote_engine(settings)
    await discover_base(engine, settings)
    try:
        pirate, robot = adapter("pirate"), adapter("robot", lora_id=8)
        for lora in (pirate, pirate, robot, robot, pirate, None):
            await collect(engine, gen_request(lora=lora))
    finally:
        await engine.shutdown()
    assert [len(f.bodies) for f in pair] == [3, 3]
    assert [sorted(f.load_calls) for f in pair] == [["pirate@v1", "robot@v1"]] * 2
