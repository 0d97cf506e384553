"""``CanaryWatch``: ends a traffic split by itself when a canary version regresses.

A split with ``rollback`` bounds (``adapters.traffic_split.RollbackBounds``) is judged
every few seconds from the figures the split already records: the per-version series of
``loragate_requests_total`` (requests, 5xx answers), ``loragate_request_duration_seconds``
(sum and count) and ``loragate_completion_tokens_total`` labelled
``adapter="name@version"``. The window starts when this gateway first sees the split (a
baseline of those cumulative figures) and runs until the split changes. The *stable*
version is the adapter's active version; every other version of the split is a canary.
A canary that has served ``min_requests`` in the window and whose error rate passes
``max_error_rate``, or whose duration per completion token (per request where a version
produced none) passes ``max_latency_ratio`` times the stable version's (the stable one
having served ``min_requests`` too), ends the split: the active version serves everyone
again.

Several gateways on one store: each judges its own traffic; the first whose figures pass
a bound clears the split with a compare-and-clear on the shared registry document
(``AdapterRegistry.clear_split(name, expected=...)``), so a split set after the one it
judged is never ended, and every gateway follows the cleared document within
``shared_store.refresh_seconds``. Only the gateway that cleared it writes the audit entry
(actor ``system``, action ``adapter.split.rollback``) and counts the rollback.

Concurrency rule: ``check`` runs on the event loop (one task, ``run``); the registry's
write goes to a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from adapters.errors import AdapterError
from adapters.registry import AdapterRegistry
from adapters.traffic_split import RollbackBounds, TrafficSplit
from gateway.adapter_runtime.traffic_split import adapter_labels
from gateway.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

CHECK_SECONDS = 5.0
SYSTEM_ACTOR = "system"
ROLLBACK_ACTION = "adapter.split.rollback"

Audit = Callable[[str, str, str | None, dict[str, Any]], Awaitable[None]]
"""(actor, action, target, detail): ``TenantAdmin.record``."""


@dataclass(frozen=True)
class VersionFigures:
    """Cumulative figures of one split version on this gateway."""

    requests: float = 0.0
    errors: float = 0.0
    """Requests answered 5xx (engine failures, timeouts), not the caller's 4xx."""
    seconds: float = 0.0
    """Sum of request durations (arrival to last byte)."""
    timed: float = 0.0
    """Requests in ``seconds``."""
    tokens: float = 0.0
    """Completion tokens of the version's requests."""

    def since(self, earlier: VersionFigures) -> VersionFigures:
        return VersionFigures(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            self.seconds - earlier.seconds,
            self.timed - earlier.timed,
            self.tokens - earlier.tokens,
        )

    @property
    def seconds_per_token(self) -> float | None:
        return self.seconds / self.tokens if self.tokens > 0 else None

    @property
    def mean_seconds(self) -> float | None:
        return self.seconds / self.timed if self.timed > 0 else None


def read_figures(metrics: GatewayMetrics, name: str) -> dict[str, VersionFigures]:
    """Every ``name@version`` series of this gateway's request counter, duration
    histogram and completion-token counter, summed over tenants, models and endpoints,
    by version."""
    prefix = f"{name}@"
    found: dict[str, dict[str, float]] = {}
    for adapter, field, value in _samples(metrics):
        if adapter.startswith(prefix):
            version = found.setdefault(adapter[len(prefix) :], {})
            version[field] = version.get(field, 0.0) + value
    return {version: VersionFigures(**fields) for version, fields in found.items()}


def _samples(metrics: GatewayMetrics) -> Iterator[tuple[str, str, float]]:
    """(adapter label, VersionFigures field, value) of every sample that feeds one."""
    for family in metrics.requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                yield sample.labels["adapter"], "requests", sample.value
                if sample.labels["status_class"] == "5xx":
                    yield sample.labels["adapter"], "errors", sample.value
    for family in metrics.completion_tokens.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                yield sample.labels["adapter"], "tokens", sample.value
    for family in metrics.e2e.collect():
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                yield sample.labels["adapter"], "seconds", sample.value
            elif sample.name.endswith("_count"):
                yield sample.labels["adapter"], "timed", sample.value


def regression(
    bounds: RollbackBounds, stable: VersionFigures, canary: VersionFigures
) -> str | None:
    """Why ``canary`` must be rolled back against ``stable`` (window figures), or None."""
    if canary.requests < bounds.min_requests:
        return None
    rate = canary.errors / canary.requests
    if bounds.max_error_rate is not None and rate > bounds.max_error_rate:
        return f"error rate {rate:.3f} above {bounds.max_error_rate}"
    if bounds.max_latency_ratio is None or stable.requests < bounds.min_requests:
        return None
    ours, theirs = _latency(canary, stable), _latency(stable, canary)
    if ours is None or not theirs:
        return None
    ratio = ours / theirs
    if ratio > bounds.max_latency_ratio:
        return f"latency {ratio:.2f}x the stable version's, above {bounds.max_latency_ratio}x"
    return None


def _latency(figures: VersionFigures, other: VersionFigures) -> float | None:
    """Duration per completion token when both versions produced tokens, else per
    request: a caller who sends a canary longer generations (its ``user`` picks the
    bucket) makes each request longer, not each token slower."""
    if figures.tokens > 0 and other.tokens > 0:
        return figures.seconds_per_token
    return figures.mean_seconds


@dataclass(frozen=True)
class Rollback:
    """A canary found regressed: the split to end and why."""

    split: TrafficSplit
    version: str
    reason: str


class CanaryWatch:
    """Built once at start-up; ``run`` is the periodic task (see the module docstring)."""

    def __init__(
        self,
        registry: AdapterRegistry,
        metrics: GatewayMetrics,
        audit: Audit,
        figures: Callable[[str], dict[str, VersionFigures]] | None = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._audit = audit
        self._figures = figures or (lambda name: read_figures(metrics, name))
        self._baselines: dict[str, tuple[TrafficSplit, dict[str, VersionFigures]]] = {}
        self.rollbacks = Counter(
            "loragate_split_rollbacks",
            "Traffic splits this gateway ended because a canary passed its rollback bounds.",
            ["adapter"],
            registry=metrics.registry,
        )

    async def run(self, interval: float = CHECK_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except (AdapterError, OSError):
                logger.warning("canary rollback check failed", exc_info=True)

    def due(self) -> list[Rollback]:
        """The splits whose canary passed its bounds in the window (no side effects
        besides starting the windows of splits seen for the first time)."""
        watched = [s for s in self._registry.splits() if s.rollback is not None]
        self._baselines = {
            s.name: self._baselines[s.name]
            if s.name in self._baselines and self._baselines[s.name][0] == s
            else (s, self._figures(s.name))
            for s in watched
        }
        return [r for s in watched if (r := self._judge(s)) is not None]

    def _judge(self, split: TrafficSplit) -> Rollback | None:
        assert split.rollback is not None
        baseline = self._baselines[split.name][1]
        now = self._figures(split.name)
        window = {v: f.since(baseline.get(v, VersionFigures())) for v, f in now.items()}
        stable_version = self._active(split.name)
        stable = window.get(stable_version or "", VersionFigures())
        for version in _canaries(split.weights, stable_version):
            reason = regression(split.rollback, stable, window.get(version, VersionFigures()))
            if reason is not None:
                return Rollback(split, version, reason)
        return None

    def _active(self, name: str) -> str | None:
        try:
            return self._registry.resolve(name).version
        except AdapterError:
            return None

    async def check(self) -> list[Rollback]:
        """Judge every watched split; end those that regressed. Returns the rollbacks
        this gateway made (a split another gateway ended first is not among them)."""
        done = []
        for rollback in self.due():
            split = rollback.split
            cleared = await asyncio.to_thread(self._registry.clear_split, split.name, split)
            self._baselines.pop(split.name, None)
            if cleared is None:
                continue  # changed or ended meanwhile (here or by another gateway)
            self._metrics.labels.update(adapters=adapter_labels(self._registry))
            self.rollbacks.labels(self._metrics.labels.adapter(split.name)).inc()
            logger.warning(
                "traffic split of %s rolled back: %s@%s %s",
                split.name,
                split.name,
                rollback.version,
                rollback.reason,
            )
            detail = {
                "weights": split.weights,
                "version": rollback.version,
                "reason": rollback.reason,
            }
            await self._audit(SYSTEM_ACTOR, ROLLBACK_ACTION, split.name, detail)
            done.append(rollback)
        return done


def _canaries(weights: Iterable[str], stable: str | None) -> list[str]:
    return [v for v in weights if v != stable]
