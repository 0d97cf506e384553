"""``FairQueue`` on its own: capacity, fair order by weight, bounds, cancellation."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import OverloadedError
from gateway.metrics import GatewayMetrics
from gateway.pipeline.fair_queue import FairQueue


def make_queue(
    capacity: int = 1, depth: int = 100, wait: float = 30.0
) -> tuple[FairQueue, GatewayMetrics]:
    metrics = GatewayMetrics(CollectorRegistry(), also_render=None)
    metrics.labels.update(tenants=["a", "b", "c"])
    return FairQueue(capacity, depth, wait, metrics), metrics


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
