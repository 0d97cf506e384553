"""``GatewayMetrics``: every Prometheus metric of one gateway, on its own registry.

Label values are bounded: tenants, models and adapters must be known (from config
and the adapter registry) or they collapse to ``"other"``, so a flood of made-up
model names cannot grow the number of series.

``render`` adds the process-wide registry's series after this gateway's: the in-process
vLLM engine's own ``vllm:*`` series (its ``PrometheusStatLogger``), so vLLM's dashboards
and alerts work on a gateway's ``/metrics`` as they do on ``vllm serve``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

OTHER = "other"
NONE = "none"
# LLM latencies span milliseconds (a cached prefill) to minutes (long generations).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 20, 40)
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)
E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300)
SHORT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
ENDPOINTS = (
    "chat",
    "completions",
    "responses",
    "retrieval",
    "models",
    "admin",
    "embeddings",
    "other",
)


class Rejection(StrEnum):
    """Why a request was refused: the ``reason`` label of ``loragate_rejections_total``
    (the values are the wire contract: dashboards and alerts match them)."""

    AUTH = "auth"
    RATE_LIMIT = "rate_limit"
    OVERLOAD = "overload"
    VALIDATION = "validation"
    NOT_FOUND = "not_found"
    BUDGET = "budget"
    ADMIN_KEY = "admin_key"


class QueueRefusal(StrEnum):
    """Why the fair queue in front of the engine (or a drain) refused a request with a
    503: the ``reason`` label of ``loragate_fair_queue_refusals_total``."""

    QUEUE_FULL = "queue_full"
    QUEUE_WAIT = "queue_wait"
    SHUTTING_DOWN = "shutting_down"


class ResidencyTier(StrEnum):
    """The ``tier`` label of ``loragate_adapters_resident``: where the engine holds an
    adapter (``gateway.adapter_runtime.residency.Residency`` names the same values)."""

    GPU_SLOT = "gpu_slot"
    CPU_CACHE = "cpu_cache"


@dataclass(frozen=True)
class Series:
    """A request's bounded label values, fixed once (at admission) for its whole life, so
    a reload that removes its tenant cannot move its counts to another series."""

    tenant: str
    adapter: str


@dataclass
class EngineSnapshot:
    """The engine's own scheduler figures, as last reported by the engine."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    adapters_in_slots: int = 0
    adapters_in_cpu_cache: int = 0
    adapters_running: int = 0


class LabelBounds:
    """The label values allowed right now; replaced whole on config or registry change."""

    def __init__(self) -> None:
        self._tenants: frozenset[str] = frozenset()
        self._models: frozenset[str] = frozenset()
        self._adapters: frozenset[str] = frozenset()

    def update(
        self,
        *,
        tenants: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        adapters: Iterable[str] | None = None,
    ) -> None:
        if tenants is not None:
            self._tenants = frozenset(tenants)
        if models is not None:
            self._models = frozenset(models)
        if adapters is not None:
            self._adapters = frozenset(adapters)

    def tenant(self, value: str | None) -> str:
        return NONE if value is None else value if value in self._tenants else OTHER

    def model(self, value: str | None) -> str:
        return NONE if value is None else value if value in self._models else OTHER

    def adapter(self, value: str | None) -> str:
        return NONE if value is None else value if value in self._adapters else OTHER

    @property
    def tenants(self) -> frozenset[str]:
        return self._tenants


def process_registry() -> Collector:
    """prometheus_client's process-wide registry, where vLLM's ``PrometheusStatLogger``
    keeps its ``vllm:*`` series (next to prometheus_client's ``process_*``/``python_*``);
    with ``PROMETHEUS_MULTIPROC_DIR`` set, a collector of that folder's files instead, as
    vLLM's own server reads them."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


class GatewayMetrics:
    """Built once at start-up; tests pass a fresh ``CollectorRegistry``.

    ``also_render`` supplies the registry rendered after this one (default: the process-wide
    one, see ``process_registry``); ``None`` renders this gateway's series only.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        enabled: bool = True,
        also_render: Callable[[], Collector] | None = process_registry,
    ) -> None:
        self.enabled = enabled
        self.registry = registry if registry is not None else CollectorRegistry()
        self._also_render = also_render
        self.labels = LabelBounds()
        self._children: dict[tuple[Any, ...], Any] = {}  # see ``child``
        r = self.registry
        self.requests = Counter(
            "loragate_requests",
            "Requests by tenant, model, adapter, endpoint and status class.",
            ["tenant", "model", "adapter", "endpoint", "status_class"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "loragate_prompt_tokens", "Prompt tokens.", ["tenant", "adapter"], registry=r
        )
        self.completion_tokens = Counter(
            "loragate_completion_tokens", "Completion tokens.", ["tenant", "adapter"], registry=r
        )
        self.cost = Counter(
            "loragate_cost",
            "Cost of the tokens served, in the pricing currency (config: pricing).",
            ["tenant", "model", "adapter"],
            registry=r,
        )
        self.engine_seconds = Counter(
            "loragate_engine_seconds",
            "Engine time of requests: from the prompt's hand-over to the last output.",
            ["tenant", "model", "adapter"],
            registry=r,
        )
        self.rejections = Counter(
            "loragate_rejections", "Requests refused, by reason.", ["reason"], registry=r
        )
        for reason in Rejection:
            self.rejections.labels(reason)
        self.ttft = Histogram(
            "loragate_time_to_first_token_seconds",
            "Arrival to first output token.",
            ["tenant", "adapter"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "loragate_time_per_output_token_seconds",
            "Mean inter-token time after the first token, per request.",
            ["tenant", "adapter"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "loragate_request_duration_seconds",
            "Arrival to last byte.",
            ["tenant", "adapter", "endpoint"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "loragate_queue_wait_seconds",
            "Engine queue: from the engine queueing a request to first scheduling it.",
            buckets=SHORT_BUCKETS,
            registry=r,
        )
        self.retrieval = Histogram(
            "loragate_retrieval_seconds",
            "Retrieval search time.",
            buckets=SHORT_BUCKETS,
            registry=r,
        )
        self.adapter_load = Histogram(
            "loragate_adapter_load_seconds",
            "Time to load an adapter into the engine.",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "loragate_in_flight_requests", "Requests being served.", ["tenant"], registry=r
        )
        self.fair_queue_wait = Histogram(
            "loragate_fair_queue_wait_seconds",
            "Gateway queue in front of the engine: arrival to an engine slot, per tenant.",
            ["tenant"],
            buckets=(*SHORT_BUCKETS, 10, 30),
            registry=r,
        )
        self.fair_queue_refusals = Counter(
            "loragate_fair_queue_refusals",
            "Requests refused with a 503 by the queue in front of the engine, by reason.",
            ["reason"],
            registry=r,
        )
        for refusal in QueueRefusal:
            self.fair_queue_refusals.labels(refusal)
        self.embedding_batch_inputs = Histogram(
            "loragate_embedding_batch_inputs",
            "Inputs per embedder call of /v1/embeddings (concurrent requests combined).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.embedding_batch_seconds = Histogram(
            "loragate_embedding_batch_seconds",
            "Embedder call time per /v1/embeddings batch.",
            buckets=SHORT_BUCKETS,
            registry=r,
        )
        self._engine_source: Callable[[], EngineSnapshot] = EngineSnapshot
        self._queue_source: Callable[[], dict[str, int]] = dict
        r.register(_EngineCollector(self))
        r.register(_QueueCollector(self))

    def set_engine_source(self, source: Callable[[], EngineSnapshot]) -> None:
        self._engine_source = source

    def engine_snapshot(self) -> EngineSnapshot:
        return self._engine_source()

    def set_queue_source(self, source: Callable[[], dict[str, int]]) -> None:
        """Scrape-time reader of the fair queue's waiters per (raw) tenant name."""
        self._queue_source = source

    def queue_depths(self) -> dict[str, int]:
        """Waiters per bounded tenant label, every known tenant present (0 if none)."""
        depths = dict.fromkeys([*sorted(self.labels.tenants), OTHER], 0)
        for tenant, count in self._queue_source().items():
            label = self.labels.tenant(tenant)
            depths[label] = depths.get(label, 0) + count
        return depths

    def render(self) -> bytes:
        """Prometheus text: this gateway's series, then ``also_render``'s, each metric name
        once (a name in both is this gateway's: a scrape must never hold it twice)."""
        sources: list[Collector] = [self.registry]
        if self._also_render is not None:
            sources.append(self._also_render())
        return generate_latest(_FirstOfEachName(sources))

    # --- recording helpers: all label values pass through the bounds ---

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, kept: prometheus_client validates the values and
        takes a lock on every ``labels`` call, several per request. The label values
        are bounded (``labels``), and no series is ever removed, so this stays small
        and never goes stale."""
        key = (metric, *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def request_done(
        self,
        *,
        tenant: str | None,
        model: str | None,
        adapter: str | None,
        endpoint: str,
        status: int,
        duration: float,
    ) -> None:
        if not self.enabled:
            return
        t, a = self.labels.tenant(tenant), self.labels.adapter(adapter)
        ep = endpoint if endpoint in ENDPOINTS else "other"
        self.child(self.requests, t, self.labels.model(model), a, ep, f"{status // 100}xx").inc()
        self.child(self.e2e, t, a, ep).observe(duration)

    def series(self, *, tenant: str | None, adapter: str | None) -> Series:
        return Series(self.labels.tenant(tenant), self.labels.adapter(adapter))

    def tokens(self, series: Series, *, prompt: int, completion: int) -> None:
        if not self.enabled:
            return
        self.child(self.prompt_tokens, series.tenant, series.adapter).inc(prompt)
        self.child(self.completion_tokens, series.tenant, series.adapter).inc(completion)

    def spend(
        self, series: Series, model: str | None, *, cost: float, engine_seconds: float
    ) -> None:
        if not self.enabled:
            return
        m = self.labels.model(model)
        self.child(self.cost, series.tenant, m, series.adapter).inc(cost)
        self.child(self.engine_seconds, series.tenant, m, series.adapter).inc(engine_seconds)

    def first_token(self, series: Series, seconds: float) -> None:
        if self.enabled:
            self.child(self.ttft, series.tenant, series.adapter).observe(seconds)

    def per_token(self, series: Series, seconds: float) -> None:
        if self.enabled:
            self.child(self.tpot, series.tenant, series.adapter).observe(seconds)

    def schedule_wait(self, seconds: float) -> None:
        if self.enabled:
            self.queue_wait.observe(seconds)

    def fair_queue_waited(self, tenant: str, seconds: float) -> None:
        if self.enabled:
            self.child(self.fair_queue_wait, self.labels.tenant(tenant)).observe(seconds)

    def fair_queue_refused(self, reason: QueueRefusal) -> None:
        if self.enabled:
            self.fair_queue_refusals.labels(reason).inc()

    def embedding_batch(self, inputs: int, seconds: float) -> None:
        if self.enabled:
            self.embedding_batch_inputs.observe(inputs)
            self.embedding_batch_seconds.observe(seconds)

    def rejected(self, reason: Rejection) -> None:
        if self.enabled:
            self.rejections.labels(reason).inc()


class _FirstOfEachName(Collector):
    """The metric families of several collectors, the first of each name only."""

    def __init__(self, sources: list[Collector]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for source in self._sources:
            for family in source.collect():
                if family.name not in seen:
                    seen.add(family.name)
                    yield family


class _QueueCollector(Collector):
    """The fair queue's depth per tenant, read at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "loragate_fair_queue_depth",
            "Requests waiting in the gateway's queue in front of the engine, per tenant.",
            labels=["tenant"],
        )
        for tenant, count in self._metrics.queue_depths().items():
            depth.add_metric([tenant], count)
        yield depth


class _EngineCollector(Collector):
    """Reads the engine's figures at scrape time (nothing to keep up to date)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        snap = self._metrics.engine_snapshot()
        yield GaugeMetricFamily(
            "loragate_engine_running_requests", "Requests the engine is running.", snap.running
        )
        yield GaugeMetricFamily(
            "loragate_engine_waiting_requests", "Requests waiting in the engine.", snap.waiting
        )
        yield GaugeMetricFamily(
            "loragate_engine_kv_cache_usage", "KV cache usage (0-1).", snap.kv_cache_usage
        )
        resident = GaugeMetricFamily(
            "loragate_adapters_resident", "Adapters resident, by tier.", labels=["tier"]
        )
        resident.add_metric([ResidencyTier.GPU_SLOT], snap.adapters_in_slots)
        resident.add_metric([ResidencyTier.CPU_CACHE], snap.adapters_in_cpu_cache)
        yield resident
        yield GaugeMetricFamily(
            "loragate_engine_adapters_running",
            "Distinct adapters among the requests the engine is running.",
            snap.adapters_running,
        )
