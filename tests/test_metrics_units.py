"""GatewayMetrics on a fresh registry: exact sample values and bounded label sets."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry

from gateway.metrics import EngineSnapshot, GatewayMetrics


def fresh() -> GatewayMetrics:
    metrics = GatewayMetrics(CollectorRegistry())
    metrics.labels.update(tenants=["acme"], models=["base", "pirate"], adapters=["pirate"])
    return metrics


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_request_and_token_counters() -> None:
    m = fresh()
    for _ in range(3):
        m.request_done(
            tenant="acme",
            model="pirate",
            adapter="pirate",
            endpoint="chat",
            status=200,
            duration=0.4,
        )
    series = m.series(tenant="acme", adapter="pirate")
    m.tokens(series, prompt=10, completion=7)
    m.tokens(series, prompt=5, completion=1)
    labels = {
        "tenant": "acme",
        "model": "pirate",
        "adapter": "pirate",
        "endpoint": "chat",
        "status_class": "2xx",
    }
    assert sample(m, "loragate_requests_total", **labels) == 3
    assert sample(m, "loragate_prompt_tokens_total", tenant="acme", adapter="pirate") == 15
    assert sample(m, "loragate_completion_tokens_total", tenant="acme", adapter="pirate") == 8
    assert (
        sample(
            m,
            "loragate_request_duration_seconds_count",
            tenant="acme",
            adapter="pirate",
            endpoint="chat",
        )
        == 3
    )
    assert (
        sample(
            m,
            "loragate_request_duration_seconds_bucket",
            tenant="acme",
            adapter="pirate",
            endpoint="chat",
            le="0.5",
        )
        == 3
    )
    assert (
        sample(
            m,
            "loragate_request_duration_seconds_bucket",
            tenant="acme",
            adapter="pirate",
            endpoint="chat",
            le="0.25",
        )
        == 0
    )


def test_latency_histograms_and_rejections() -> None:
    m = fresh()
    series = m.series(tenant="acme", adapter=None)
    m.first_token(series, 0.3)
    m.per_token(series, 0.02)
    m.rejected("rate_limit")
    m.rejected("rate_limit")
    assert (
        sample(m, "loragate_time_to_first_token_seconds_count", tenant="acme", adapter="none") == 1
    )
    assert (
        sample(m, "loragate_time_per_output_token_seconds_sum", tenant="acme", adapter="none")
        == 0.02
    )
    assert sample(m, "loragate_rejections_total", reason="rate_limit") == 2
    assert sample(m, "loragate_rejections_total", reason="auth") == 0  # pre-initialised


def test_engine_gauges_are_read_at_scrape_time() -> None:
    m = fresh()
    m.set_engine_source(
        lambda: EngineSnapshot(
            running=3, waiting=2, kv_cache_usage=0.25, adapters_in_slots=2, adapters_in_cpu_cache=5
        )
    )
    assert sample(m, "loragate_engine_running_requests") == 3
    assert sample(m, "loragate_engine_waiting_requests") == 2
    assert sample(m, "loragate_engine_kv_cache_usage") == 0.25
    assert sample(m, "loragate_adapters_resident", tier="gpu_slot") == 2
    assert sample(m, "loragate_adapters_resident", tier="cpu_cache") == 5


def series_count(m: GatewayMetrics) -> int:
    return sum(len(family.samples) for family in m.registry.collect())


def test_random_model_names_do_not_grow_the_series_count() -> None:
    m = fresh()

    def flood(n: int) -> None:
        for _ in range(n):
            name = uuid.uuid4().hex
            m.request_done(
                tenant=name, model=name, adapter=name, endpoint=name, status=404, duration=0.01
            )

    flood(1)
    before = series_count(m)
    flood(500)
    assert series_count(m) == before
    labels = {
        "tenant": "other",
        "model": "other",
        "adapter": "other",
        "endpoint": "other",
        "status_class": "4xx",
    }
    assert sample(m, "loragate_requests_total", **labels) == 501


def test_disabled_metrics_record_nothing() -> None:
    m = GatewayMetrics(CollectorRegistry(), enabled=False)
    m.request_done(tenant="a", model="b", adapter=None, endpoint="chat", status=200, duration=1)
    assert b"loragate_requests_total{" not in m.render()


async def test_adapter_load_time_is_observed(fake_gateway) -> None:  # type: ignore[no-untyped-def]
    """Start-up loads the two config adapters into the engine: two observations."""
    metrics = fake_gateway.app.state.gateway.metrics
    loads = len(fake_gateway.engine.added)
    assert loads == 2
    assert metrics.registry.get_sample_value("loragate_adapter_load_seconds_count") == loads
