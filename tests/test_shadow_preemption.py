"""A shadow copy gives its engine slots back as soon as a caller's request waits for
them: the copy is started only on an idle queue, and a burst that arrives while it runs
must not wait for an answer nobody sees. ShadowRunner over a real FairQueue and the fake
engine (slow tokens)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from gateway.engine.interface import AdapterRef, GenerationParams, GenerationRequest
from gateway.metrics import GatewayMetrics
from gateway.pipeline.fair_queue import FairQueue
from gateway.pipeline.shadow import ShadowMetrics, ShadowPlan, ShadowRunner
from gateway.pipeline.shadow_log import ShadowAnswer, ShadowLog
from tests.support.fakes import FakeEngine

SHADOW = AdapterRef(name="pirate", lora_id=2, path="/unused", version="v2")


def plan() -> ShadowPlan:
    params = GenerationParams(max_tokens=64)
    request = GenerationRequest("shadow-r1", [1, 2, 3], params, adapter=SHADOW)
    return ShadowPlan(
        tenant="acme",
        weight=1.0,
        adapter="pirate",
        stable_version="v1",
        shadow=SHADOW,
        generations=[request],
        request_id="r1",
        log=True,
    )


async def test_a_waiting_request_takes_the_slot_of_a_running_shadow() -> None:
    metrics = GatewayMetrics(CollectorRegistry(), also_render=None)
    metrics.labels.update(tenants=["acme", "globex"], adapters=["pirate", "pirate@v2"])
    queue = FairQueue(2, 8, 30.0, metrics)
    engine = FakeEngine(reply_words=80)
    engine.token_delay = 0.05  # the shadow alone would run ~4 s
    log = ShadowLog()
    runner = ShadowRunner(engine, queue, ShadowMetrics(metrics), log)
    stable = ShadowAnswer(version="v1", text=["x"], completion_tokens=1, seconds=0.1)
    assert runner.submit(plan(), stable, draining=False)
    for _ in range(400):
        if "shadow-r1" in engine.running:
            break
        await asyncio.sleep(0.005)
    async with queue.slot("globex", 1.0, 1):  # the one free slot
        started = time.monotonic()
        async with queue.slot("globex", 1.0, 1):  # needs the shadow's slot
            waited = time.monotonic() - started
    assert waited < 2.0, waited  # not the shadow's ~4 s
    assert "shadow-r1" in engine.aborted
    for _ in range(200):
        if runner.running == 0:
            break
        await asyncio.sleep(0.005)
    assert runner.running == 0
    registry = metrics.registry
    preempted = {"adapter": "pirate@v2", "outcome": "preempted"}
    assert registry.get_sample_value("loragate_shadow_requests_total", preempted) == 1
    [entry] = log.page("pirate")[0]
    assert entry.shadow.error == "preempted"
