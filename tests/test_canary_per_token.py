"""A canary is judged on its duration per completion token: callers who pick the
canary's buckets (their ``user`` field) and ask it for longer answers make each request
longer, not each token slower, and must not roll the split back for everyone."""

from prometheus_client import CollectorRegistry

from adapters.traffic_split import RollbackBounds
from gateway.adapter_runtime.canary_rollback import VersionFigures, read_figures, regression
from gateway.metrics import GatewayMetrics

BOUNDS = RollbackBounds(max_latency_ratio=1.5, min_requests=50)


def figures(requests: int, seconds_each: float, tokens_each: int) -> VersionFigures:
    return VersionFigures(requests, 0, requests * seconds_each, requests, requests * tokens_each)


def test_longer_answers_on_the_canary_are_not_a_regression() -> None:
    stable = figures(100, 1.0, 20)
    canary = figures(100, 4.0, 80)  # four times the tokens, same time per token
    assert regression(BOUNDS, stable, canary) is None


def test_slower_tokens_on_the_canary_are_a_regression() -> None:
    stable = figures(100, 1.0, 20)
    canary = figures(100, 2.0, 20)  # same answers, twice the time
    reason = regression(BOUNDS, stable, canary)
    assert reason is not None and "latency 2.00x" in reason


def test_without_tokens_the_request_duration_is_compared() -> None:
    stable = figures(100, 1.0, 0)
    canary = figures(100, 2.0, 0)
    assert regression(BOUNDS, stable, canary) is not None


def test_read_figures_takes_the_completion_tokens_of_each_version() -> None:
    metrics = GatewayMetrics(CollectorRegistry(), also_render=None)
    for version, tokens in (("v1", 40), ("v2", 160)):
        adapter = f"tone@{version}"
        metrics.requests.labels("t", "m", adapter, "chat", "2xx").inc(2)
        metrics.completion_tokens.labels("t", adapter).inc(tokens)
        metrics.e2e.labels("t", adapter, "chat").observe(1.0)
        metrics.completion_tokens.labels("t", "other@v1").inc(999)
    seen = read_figures(metrics, "tone")
    assert seen["v1"].tokens == 40 and seen["v2"].tokens == 160
    assert seen["v2"].requests == 2 and seen["v2"].timed == 1
