"""The enumerations whose values are a wire contract (metric labels that dashboards and
alerts match, error codes clients branch on) keep their exact values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from gateway.adapter_runtime.residency import Residency
from gateway.errors import GatewayError, OverloadedError, ShuttingDownError
from gateway.metrics import (
    EngineSnapshot,
    GatewayMetrics,
    QueueRefusal,
    Rejection,
    ResidencyTier,
)
from gateway.pipeline.fair_queue import FairQueue

REJECTION_LABELS = [
    "auth",
    "rate_limit",
    "overload",
    "validation",
    "not_found",
    "budget",
    "admin_key",
]
QUEUE_REFUSAL_CODES = {
    "queue_full": (OverloadedError, 503, "overloaded"),
    "queue_wait": (OverloadedError, 503, "overloaded"),
    "shutting_down": (ShuttingDownError, 503, "shutting_down"),
}


def metrics() -> GatewayMetrics:
    return GatewayMetrics(CollectorRegistry(), also_render=None)


@pytest.mark.parametrize("reason", list(Rejection))
def test_each_rejection_counts_under_its_label(reason: Rejection) -> None:
    m = metrics()
    m.rejected(reason)
    assert reason.value == REJECTION_LABELS[list(Rejection).index(reason)]
    assert m.registry.get_sample_value("loragate_rejections_total", {"reason": reason}) == 1
    assert f'loragate_rejections_total{{reason="{reason.value}"}} 1.0' in m.render().decode()


def test_rejection_labels_are_exactly_the_contract() -> None:
    assert [r.value for r in Rejection] == REJECTION_LABELS


async def refuse(reason: QueueRefusal, m: GatewayMetrics) -> GatewayError:
    """A real ``FairQueue`` refusing a second tenant's request for ``reason``."""
    depth, wait = (0, 30.0) if reason is QueueRefusal.QUEUE_FULL else (10, 0.01)
    queue = FairQueue(1, depth, wait, m)
    async with queue.slot("a", 1.0, 1):
        if reason is QueueRefusal.SHUTTING_DOWN:
            queue.close(lambda: ShuttingDownError("The server is shutting down."))
        with pytest.raises(GatewayError) as caught:
            async with queue.slot("b", 1.0, 1):
                pass
    return caught.value


@pytest.mark.parametrize("reason", list(QueueRefusal))
async def test_each_queue_refusal_keeps_its_label_and_error_code(reason: QueueRefusal) -> None:
    m = metrics()
    error = await refuse(reason, m)
    kind, status, code = QUEUE_REFUSAL_CODES[reason.value]
    assert (type(error), error.status_code, error.code) == (kind, status, code)
    if kind is OverloadedError:
        assert error.headers["Retry-After"].isdigit()
    text = m.render().decode()
    assert f'loragate_fair_queue_refusals_total{{reason="{reason.value}"}} 1.0' in text
    others = [r for r in QueueRefusal if r is not reason]
    assert all(
        m.registry.get_sample_value("loragate_fair_queue_refusals_total", {"reason": r}) == 0
        for r in others
    )


def test_queue_refusal_labels_are_exactly_the_contract() -> None:
    assert [r.value for r in QueueRefusal] == list(QUEUE_REFUSAL_CODES)


def test_residency_tiers_keep_their_labels() -> None:
    assert [t.value for t in Residency] == ["gpu_slot", "cpu_cache", "disk"]
    assert [t.value for t in ResidencyTier] == ["gpu_slot", "cpu_cache"]
    m = metrics()
    m.set_engine_source(lambda: EngineSnapshot(adapters_in_slots=2, adapters_in_cpu_cache=5))
    text = m.render().decode()
    assert 'loragate_adapters_resident{tier="gpu_slot"} 2.0' in text
    assert 'loragate_adapters_resident{tier="cpu_cache"} 5.0' in text
