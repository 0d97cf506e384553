"""``FairQueue`` on its own: capacity, fair order by weight, headroom for tenants below
their share, bounds, cancellation, drain."""

from __future__ import annotations

import asyncio
import random
import time
from functools import partial
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import OverloadedError, ShuttingDownError
from gateway.metrics import GatewayMetrics
from gateway.pipeline.fair_queue import FairQueue


def make_queue(
    capacity: int = 1, depth: int = 100, wait: float = 30.0, **options: Any
) -> tuple[FairQueue, GatewayMetrics]:
    metrics = GatewayMetrics(CollectorRegistry(), also_render=None)
    metrics.labels.update(tenants=["a", "b", "c"])
    return FairQueue(capacity, depth, wait, metrics, **options), metrics


class Runner:
    """Requests that hold their slot until told to finish; records grant order."""

    def __init__(self, queue: FairQueue) -> None:
        self.queue = queue
        self.granted: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def submit(self, name: str, tenant: str, weight: float = 1.0, cost: int = 1) -> None:
        self.release[name] = asyncio.Event()

        async def run() -> None:
            async with self.queue.slot(tenant, weight, cost):
                self.granted.append(name)
                await self.release[name].wait()

        self.tasks[name] = asyncio.create_task(run())

    async def finish(self, name: str) -> None:
        self.release[name].set()
        await self.tasks[name]
        await asyncio.sleep(0)

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)


async def test_capacity_bounds_the_engine_and_release_grants_the_next():
    queue, _ = make_queue(capacity=2)
    r = Runner(queue)
    for name in ("a1", "a2", "a3"):
        r.submit(name, "a")
    await r.settle()
    assert r.granted == ["a1", "a2"] and queue.in_use == 2 and queue.depth == 1
    await r.finish("a1")
    await r.settle()
    assert r.granted == ["a1", "a2", "a3"] and queue.depth == 0
    for name in ("a2", "a3"):
        await r.finish(name)
    assert queue.in_use == 0


async def test_a_light_tenant_passes_a_flooding_tenants_backlog():
    queue, _ = make_queue(capacity=1)
    r = Runner(queue)
    for i in range(8):
        r.submit(f"a{i}", "a")
    await r.settle()
    r.submit("b0", "b")
    await r.settle()
    await r.finish("a0")
    await r.settle()
    # FIFO would serve a1..a7 first; fair queuing serves b0 next.
    assert r.granted == ["a0", "b0"]
    await r.finish("b0")
    for i in range(1, 8):
        await r.settle()
        await r.finish(f"a{i}")
    assert r.granted[2:] == [f"a{i}" for i in range(1, 8)]  # FIFO within a tenant


async def test_backlogged_tenants_share_by_weight():
    queue, _ = make_queue(capacity=1)
    r = Runner(queue)
    r.submit("hold", "c")
    await r.settle()
    for i in range(12):
        r.submit(f"a{i}", "a", weight=2.0)
        r.submit(f"b{i}", "b", weight=1.0)
    await r.settle()
    await r.finish("hold")
    for _ in range(12):
        await r.settle()
        await r.finish(r.granted[-1])
    served = r.granted[1:13]
    assert sum(n.startswith("a") for n in served) == 8  # 2:1
    for t in r.tasks.values():
        t.cancel()
    await asyncio.gather(*r.tasks.values(), return_exceptions=True)
    assert queue.in_use == 0 and queue.depth == 0


async def test_full_queue_refuses_at_once_with_retry_after_and_counts():
    queue, metrics = make_queue(capacity=1, depth=2)
    r = Runner(queue)
    for name in ("a0", "a1", "a2"):
        r.submit(name, "a")
    await r.settle()
    with pytest.raises(OverloadedError) as info:
        async with queue.slot("a", 1.0, 1):
            pass
    assert info.value.status_code == 503 and info.value.code == "overloaded"
    assert int(info.value.headers["Retry-After"]) >= 1
    assert (
        metrics.registry.get_sample_value(
            "loragate_fair_queue_refusals_total", {"reason": "queue_full"}
        )
        == 1
    )
    assert metrics.registry.get_sample_value("loragate_fair_queue_depth", {"tenant": "a"}) == 2
    assert metrics.registry.get_sample_value("loragate_fair_queue_depth", {"tenant": "b"}) == 0
    with pytest.raises(OverloadedError):
        queue.check("a")  # the cheap pre-check says the same
    for name in ("a0", "a1", "a2"):
        await r.settle()
        await r.finish(name)


async def test_a_full_queue_pushes_out_the_flooders_newest_for_another_tenant():
    queue, _ = make_queue(capacity=1, depth=4)
    r = Runner(queue)
    for i in range(5):  # one runs, four wait: the queue is full
        r.submit(f"a{i}", "a")
    await r.settle()
    queue.check("b")  # room will be made for b
    r.submit("b0", "b")
    await r.settle()
    with pytest.raises(OverloadedError):
        await r.tasks["a4"]  # a's newest waiter was pushed out
    await r.finish("a0")
    await r.settle()
    assert r.granted == ["a0", "b0"]
    for name in ("b0", "a1", "a2", "a3"):
        await r.settle()
        await r.finish(name)
    assert queue.in_use == 0 and queue.depth == 0


async def test_a_wait_past_the_bound_is_a_503_and_a_predicted_one_refused_at_once():
    queue, metrics = make_queue(capacity=1, wait=0.05)
    r = Runner(queue)
    r.submit("a0", "a")
    await r.settle()
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(OverloadedError):
        async with queue.slot("b", 1.0, 1):
            pass
    assert 0.04 < loop.time() - began < 1
    await asyncio.sleep(0.1)
    await r.finish("a0")  # held ~0.15 s: the queue now knows a slot is held that long
    r.submit("a1", "a")
    await r.settle()
    began = loop.time()
    with pytest.raises(OverloadedError):
        async with queue.slot("b", 1.0, 1):
            pass
    assert loop.time() - began < 0.02  # predicted, not waited for
    assert (
        metrics.registry.get_sample_value(
            "loragate_fair_queue_refusals_total", {"reason": "queue_wait"}
        )
        == 2
    )
    await r.finish("a1")


async def test_cancelled_waiters_leave_and_no_slot_leaks():
    queue, _ = make_queue(capacity=3, depth=1000)
    rng = random.Random(7)

    async def request(i: int) -> None:
        async with queue.slot(rng.choice("abc"), rng.choice([1.0, 2.0]), rng.choice([1, 1, 2])):
            await asyncio.sleep(rng.random() * 0.004)

    tasks = [asyncio.create_task(request(i)) for i in range(300)]
    for _ in range(60):  # cancel at random moments: waiting, just granted, or running
        await asyncio.sleep(rng.random() * 0.002)
        rng.choice(tasks).cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert any(isinstance(x, asyncio.CancelledError) for x in results)
    assert all(x is None or isinstance(x, asyncio.CancelledError) for x in results)
    assert queue.in_use == 0 and queue.depth == 0 and queue.depths() == {}


async def test_granted_then_cancelled_before_running_gives_the_slot_back():
    queue, _ = make_queue(capacity=1)
    held = queue.slot("a", 1.0, 1)
    await held.__aenter__()
    waiter = asyncio.create_task(queue.slot("b", 1.0, 1).__aenter__())
    for _ in range(3):
        await asyncio.sleep(0)
    assert queue.depth == 1
    await held.__aexit__(None, None, None)  # grants b's slot; b has not resumed yet
    assert queue.in_use == 1 and queue.depth == 0
    waiter.cancel()
    results = await asyncio.gather(waiter, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert queue.in_use == 0


# ---------------------------------------------------------------- headroom


def running(r: Runner, tenant: str) -> list[str]:
    """Names of ``tenant``'s requests granted and not finished."""
    return [n for n in r.granted if n.startswith(tenant) and not r.tasks[n].done()]


async def test_a_flooder_alone_gets_every_slot():
    queue, _ = make_queue(capacity=8, headroom=1)
    r = Runner(queue)
    for i in range(20):
        r.submit(f"a{i}", "a")
    await r.settle()
    assert queue.in_use == 8 and queue.depth == 12
    await r.finish("a0")
    await r.settle()
    assert queue.in_use == 8  # nobody else is active: nothing is kept free
    for t in r.tasks.values():
        t.cancel()
    await asyncio.gather(*r.tasks.values(), return_exceptions=True)


@pytest.mark.parametrize("headroom", [1, 0])
async def test_headroom_starts_a_light_tenants_request_at_once_during_a_flood(headroom: int):
    queue, _ = make_queue(capacity=8, headroom=headroom)
    r = Runner(queue)
    r.submit("b0", "b")  # the light tenant has been active lately
    await r.settle()
    await r.finish("b0")
    for i in range(20):
        r.submit(f"a{i}", "a")
    await r.settle()
    assert len(running(r, "a")) == 8 - headroom
    r.submit("b1", "b")
    await r.settle()
    if not headroom:  # off: it waits for a flooder's slot (the tail latency headroom cuts)
        assert "b1" not in r.granted
        await r.finish("a0")
        await r.settle()
    assert "b1" in r.granted
    if headroom:
        assert queue.in_use == 8 and len(running(r, "a")) == 7
        await r.finish("a0")  # the flooder's freed slot stays free: b is below its share
        await r.settle()
        assert queue.in_use == 7 and len(running(r, "a")) == 6
        r.submit("b2", "b")
        await r.settle()
        assert "b2" in r.granted
    for t in r.tasks.values():
        t.cancel()
    await asyncio.gather(*r.tasks.values(), return_exceptions=True)
    assert queue.in_use == 0 and queue.depth == 0


async def test_a_tenant_that_ran_two_at_once_gets_two_slots_kept():
    """The reserve follows what a light tenant ran at once lately: two of its requests
    arriving together during a flood both start at once (not the second after a
    flooder's slot frees), and the flooder still gets the rest."""
    queue, _ = make_queue(capacity=8, headroom=1)
    r = Runner(queue)
    r.submit("b0", "b")
    r.submit("b1", "b")  # b ran two at once
    await r.settle()
    await r.finish("b0")
    await r.finish("b1")
    for i in range(20):
        r.submit(f"a{i}", "a")
    await r.settle()
    assert len(running(r, "a")) == 6
    r.submit("b2", "b")
    r.submit("b3", "b")
    await r.settle()
    assert {"b2", "b3"} <= set(r.granted)
    for t in r.tasks.values():
        t.cancel()
    await asyncio.gather(*r.tasks.values(), return_exceptions=True)
    assert queue.in_use == 0


async def test_headroom_is_capped_at_a_quarter_of_the_slots():
    queue, _ = make_queue(capacity=8, headroom=1)
    r = Runner(queue)
    for tenant in ("b", "c", "d"):  # three light tenants, active, holding nothing
        r.submit(f"{tenant}0", tenant)
        await r.settle()
        await r.finish(f"{tenant}0")
    for i in range(20):
        r.submit(f"a{i}", "a")
    await r.settle()
    assert len(running(r, "a")) == 6  # 3 tenants below share, but at most 8 // 4 kept
    for i in range(3):
        await r.finish(f"a{i}")
        await r.settle()
        assert len(running(r, "a")) == 6 and queue.in_use == 6
    r.submit("b1", "b")
    r.submit("c1", "c")
    r.submit("d1", "d")
    await r.settle()
    assert {"b1", "c1"} <= set(r.granted) and "d1" not in r.granted
    for t in r.tasks.values():
        t.cancel()
    await asyncio.gather(*r.tasks.values(), return_exceptions=True)


async def test_a_tenant_below_its_weighted_share_takes_the_reserve():
    queue, _ = make_queue(capacity=8, headroom=1)
    r = Runner(queue)
    r.submit("c0", "c")  # a light tenant, active
    await r.settle()
    await r.finish("c0")
    for i in range(12):
        r.submit(f"a{i}", "a", weight=1.0)
    await r.settle()
    assert len(running(r, "a")) == 7
    for i in range(12):
        r.submit(f"b{i}", "b", weight=6.0)  # share 8 x 6/8 = 6
    await r.settle()
    assert len(running(r, "b")) == 1  # below its share: it took the free slot
    for i in range(6):
        await r.finish(f"a{i}")
        await r.settle()
    # b took a's slots until at its share; then one stays free for c
    assert len(running(r, "b")) == 6 and len(running(r, "a")) == 1 and queue.in_use == 7
    for t in r.tasks.values():
        t.cancel()
    await asyncio.gather(*r.tasks.values(), return_exceptions=True)


async def test_a_reserve_lapses_with_its_tenant_and_the_slot_is_used():
    queue, _ = make_queue(capacity=4, headroom=1, active_seconds=0.05)
    r = Runner(queue)
    r.submit("b0", "b")
    await r.settle()
    await r.finish("b0")
    for i in range(10):
        r.submit(f"a{i}", "a")
    await r.settle()
    assert len(running(r, "a")) == 3
    began = time.monotonic()
    async with asyncio.timeout(2):
        while queue.in_use < 4:  # noqa: ASYNC110 (no arrival, no release: only the lapse)
            await asyncio.sleep(0.005)
    assert time.monotonic() - began < 0.5
    await r.settle()
    assert len(running(r, "a")) == 4
    for t in r.tasks.values():
        t.cancel()
    await asyncio.gather(*r.tasks.values(), return_exceptions=True)


async def test_with_headroom_no_more_than_the_reserve_idles_while_requests_wait():
    queue, _ = make_queue(capacity=8, depth=1000, headroom=1, active_seconds=0.02)
    rng = random.Random(11)
    worst = 0

    async def request(tenant: str) -> None:
        async with queue.slot(tenant, rng.choice([1.0, 2.0]), 1):
            await asyncio.sleep(rng.random() * 0.01)

    async def tenant_load(tenant: str, count: int, pause: float) -> None:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(request(tenant)))
            await asyncio.sleep(rng.random() * pause)
        await asyncio.gather(*tasks)

    async def watch() -> None:
        nonlocal worst
        while True:
            if queue.depth:
                worst = max(worst, queue.capacity - queue.in_use)
            await asyncio.sleep(0.0005)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(
        tenant_load("a", 300, 0.0005), tenant_load("b", 30, 0.01), tenant_load("c", 15, 0.03)
    )
    watcher.cancel()
    assert 0 < worst <= 8 // 4
    assert queue.in_use == 0 and queue.depth == 0 and queue.depths() == {}


# ---------------------------------------------------------------- drain


async def test_close_refuses_the_waiters_at_once_and_whatever_would_wait():
    queue, metrics = make_queue(capacity=1)
    r = Runner(queue)
    for name, tenant in (("a0", "a"), ("a1", "a"), ("b0", "b")):
        r.submit(name, tenant)
    await r.settle()
    assert queue.depth == 2

    def refusal() -> ShuttingDownError:
        return ShuttingDownError("draining", headers={"Retry-After": "1"})

    queue.close(refusal)
    await r.settle()
    for name in ("a1", "b0"):
        assert r.tasks[name].done()
        assert isinstance(r.tasks[name].exception(), ShuttingDownError)
    assert queue.depth == 0 and queue.depths() == {} and r.granted == ["a0"]
    with pytest.raises(ShuttingDownError):
        queue.check("c")
    with pytest.raises(ShuttingDownError):
        async with queue.slot("c", 1.0, 1):
            pass
    assert (
        metrics.registry.get_sample_value(
            "loragate_fair_queue_refusals_total", {"reason": "shutting_down"}
        )
        == 4
    )
    await r.finish("a0")  # what runs finishes
    assert queue.in_use == 0


def holding(r: Runner, tenant: str) -> int:
    return len(running(r, tenant))


async def _cancel_all(r: Runner) -> None:
    for t in r.tasks.values():
        t.cancel()
    await asyncio.gather(*r.tasks.values(), return_exceptions=True)


@pytest.mark.parametrize(("weight_a", "share_b"), [(1.0, 4), (3.0, 2)])
async def test_a_tenant_over_its_share_gets_no_freed_slot_while_another_waits(
    weight_a: float, share_b: int
):
    """b ran a big request earlier, so its start tags come after the flooder's queued
    ones (plain fair order would alternate); still, the slots a freed go to b until b
    holds its weighted share of the 8: a stays over its share no longer than its
    requests take to finish."""
    queue, _ = make_queue(capacity=8, headroom=0)
    r = Runner(queue)
    r.submit("big", "b", cost=8)
    await r.settle()
    await r.finish("big")
    for i in range(20):
        r.submit(f"a{i}", "a", weight=weight_a)
    await r.settle()
    assert holding(r, "a") == 8
    for i in range(6):
        r.submit(f"b{i}", "b")
    await r.settle()
    for i in range(share_b):
        await r.finish(f"a{i}")
        await r.settle()
        assert holding(r, "b") == i + 1 and holding(r, "a") == 7 - i
    # b holds its share: it is over it with one more, a below it, so a's turn.
    await r.finish(f"a{share_b}")
    await r.settle()
    assert holding(r, "b") == share_b and holding(r, "a") == 8 - share_b
    await _cancel_all(r)
    assert queue.in_use == 0 and queue.depth == 0


async def test_the_share_cap_idles_no_slot_and_starves_no_large_request():
    """A request larger than the share starts once its tenant holds nothing; a tenant
    over its share does not hold back a waiting one that cannot use the slot anyway."""
    queue, _ = make_queue(capacity=8, headroom=0)
    r = Runner(queue)
    for i in range(6):
        r.submit(f"a{i}", "a")
    r.submit("b0", "b", cost=2)
    await r.settle()
    r.submit("b1", "b", cost=6)  # b holds 2 of its 4: 8 would be past its share
    r.submit("a6", "a")
    await r.settle()
    for i in range(6):
        await r.finish(f"a{i}")
        await r.settle()
    assert "b1" not in r.granted and "a6" in r.granted  # b at its share waits: a goes
    await r.finish("b0")
    await r.finish("a6")
    await r.settle()
    assert "b1" in r.granted  # b holds nothing: its large request starts
    await _cancel_all(r)
    assert queue.in_use == 0


async def test_stalled_streams_are_cut_for_a_waiting_tenant_but_not_below_the_share():
    """Two of a's requests hold every slot and their clients read nothing: b's request
    gets one of them cut (one is enough), never a's last share of the slots."""
    queue, _ = make_queue(capacity=8, headroom=0)
    r = Runner(queue)
    r.submit("a0", "a", cost=4)
    r.submit("a1", "a", cost=4)
    await r.settle()
    cuts: list[str] = []
    withdraw = {name: queue.stalled("a", 4, partial(cuts.append, name)) for name in r.granted}
    await r.settle()
    assert cuts == []  # nobody waits: a may hold everything
    r.submit("b0", "b", cost=2)
    await r.settle()
    assert len(cuts) == 1 and queue.streams_cut == 1
    withdraw[cuts[0]]()
    await r.finish(cuts[0])  # what the cut does: the request ends, its slots are freed
    await r.settle()
    assert "b0" in r.granted
    r.submit("b1", "b", cost=4)  # a holds 4 of 8, its share: its other stream stays
    await r.settle()
    assert len(cuts) == 1
    await _cancel_all(r)
    assert queue.in_use == 0
