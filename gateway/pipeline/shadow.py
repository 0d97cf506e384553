"""``ShadowRunner``: a share of a split's requests sent again to its shadow version.

A traffic split with ``shadow: {version, percent}`` (``adapters.traffic_split``) makes
the catalog attach the shadow version to the requests it routes (``ServedModel.shadow``).
For ``percent`` of them, once the caller's own request has finished (its last output is
out, its admission left), the same prompts with the same sampling parameters go to the
shadow version. The caller never sees that answer, and nothing about it can delay,
fail or bill the caller's request:

- it starts only after the caller's request ended, so it never delays the caller's
  stream; it is skipped (counted ``skipped``) when the engine's fair queue has anyone
  waiting or fewer than one free slot would remain, when ``max_in_flight`` shadows run
  already, or while the gateway drains;
- it holds its slots in the fair queue under the caller's tenant and weight, so a
  tenant's shadows count in its fair share of the engine like its own requests;
- it is not charged to the tenant's rate limits or budgets, and not written to usage:
  the operator asked for it, not the tenant. Its cost is bounded by ``max_in_flight``
  engine requests at a time and by the idle-queue rule above;
- once running, it gives its slots back as soon as anyone waits in the fair queue: the
  engine request is aborted and counted ``preempted``, so a burst arriving after it
  started never waits for an answer nobody sees;
- a failure (engine error, cancellation at shutdown) is counted (``error``), logged at
  debug level, and never reaches anyone.

Counts, durations and tokens per shadow version go to ``loragate_shadow_*``; the caller's
side has the split's own ``adapter="name@version"`` series. Both answers go to the
``ShadowLog`` only for tenants with ``shadow_log: true``.

Concurrency rule: event loop only; each shadow is one task, all cancelled by ``close``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from prometheus_client import Counter, Histogram

from gateway.engine.interface import AdapterRef, GenerationOutput, GenerationRequest, Generator
from gateway.errors import GatewayError
from gateway.metrics import E2E_BUCKETS, GatewayMetrics
from gateway.pipeline.fair_queue import FairQueue
from gateway.pipeline.merge import ChoiceAccumulator, merged
from gateway.pipeline.shadow_log import ShadowAnswer, ShadowLog
from gateway.tenancy.directory import Route

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2
"""Shadow requests in the engine at once, across tenants."""
PREEMPT_CHECK_SECONDS = 0.05
"""How often a running shadow looks for requests waiting in the fair queue."""


class ShadowOutcome(StrEnum):
    """The ``outcome`` label of ``loragate_shadow_requests_total``."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"
    PREEMPTED = "preempted"


class ShadowMetrics:
    """``loragate_shadow_*``: requests by outcome, duration and tokens per shadow version."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        r = metrics.registry
        self.labels = metrics.labels
        self.enabled = metrics.enabled
        self.requests = Counter(
            "loragate_shadow_requests",
            "Shadow requests by shadow version and outcome (ok, error, skipped).",
            ["adapter", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "loragate_shadow_duration_seconds",
            "Shadow requests: engine start to last token.",
            ["adapter"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "loragate_shadow_completion_tokens",
            "Completion tokens of shadow requests.",
            ["adapter"],
            registry=r,
        )

    def done(
        self, label: str, outcome: ShadowOutcome, seconds: float = 0.0, tokens: int = 0
    ) -> None:
        if not self.enabled:
            return
        adapter = self.labels.adapter(label)
        self.requests.labels(adapter, outcome).inc()
        if outcome != ShadowOutcome.SKIPPED:
            self.duration.labels(adapter).observe(seconds)
            self.tokens.labels(adapter).inc(tokens)


@dataclass(frozen=True)
class ShadowPlan:
    """A caller's request chosen for shadowing: what to send again, and where."""

    tenant: str
    """The caller's tenant label (fair queue, log)."""
    weight: float
    adapter: str
    stable_version: str
    shadow: AdapterRef
    generations: list[GenerationRequest]
    request_id: str
    log: bool
    """The tenant opted in (``shadow_log``): keep both answers."""

    @property
    def label(self) -> str:
        return f"{self.adapter}@{self.shadow.version}"

    @property
    def sequences(self) -> int:
        return sum(g.params.n for g in self.generations)


class ShadowRunner:
    """Built once at start-up; see the module docstring for the rules."""

    def __init__(
        self,
        generator: Generator,
        queue: FairQueue,
        metrics: ShadowMetrics,
        log: ShadowLog,
        max_in_flight: int = MAX_IN_FLIGHT,
        chance: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._generator = generator
        self._queue = queue
        self.metrics = metrics
        self.log = log
        self.max_in_flight = max_in_flight
        self._chance = chance
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    def sampled(self, percent: int) -> bool:
        """Whether this request is one of the ``percent`` shadowed."""
        return self._chance() * 100 < percent

    def submit(self, plan: ShadowPlan, stable: ShadowAnswer, *, draining: bool) -> bool:
        """Start the shadow of a finished request, unless the engine is busy (see the
        module docstring); returns whether it started."""
        free = self._queue.capacity - self._queue.in_use
        if (
            draining
            or self.running >= self.max_in_flight
            or self._queue.depth > 0
            or free - plan.sequences < 1
        ):
            self.metrics.done(plan.label, ShadowOutcome.SKIPPED)
            return False
        task = asyncio.create_task(self._run(plan, stable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _generate(self, plan: ShadowPlan, acc: ChoiceAccumulator, tokens: list[int]) -> None:
        async for p, out in merged(self._generator.generate, plan.generations):
            acc.add(p, out)
            tokens[0] += sum(len(c.token_ids) for c in out.choices)

    async def _preempted(self, work: asyncio.Task[None]) -> bool:
        """Wait for ``work``; cancel it (the engine request aborted) as soon as anyone
        waits in the fair queue. Whether it was cut."""
        while not work.done():
            if self._queue.depth > 0:
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                return True
            await asyncio.wait({work}, timeout=PREEMPT_CHECK_SECONDS)
        work.result()  # its error, if it failed
        return False

    async def _run(self, plan: ShadowPlan, stable: ShadowAnswer) -> None:
        started = self.clock()
        acc = ChoiceAccumulator(len(plan.generations), plan.generations[0].params.n)
        tokens = [0]
        error: str | None = None
        outcome = ShadowOutcome.OK
        try:
            async with self._queue.slot(plan.tenant, plan.weight, plan.sequences):
                started = self.clock()
                work = asyncio.create_task(self._generate(plan, acc, tokens))
                try:
                    if await self._preempted(work):
                        error, outcome = "preempted", ShadowOutcome.PREEMPTED
                finally:
                    if not work.done():  # this task cancelled (shutdown): the copy too
                        work.cancel()
                        await asyncio.gather(work, return_exceptions=True)
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except (GatewayError, OSError, RuntimeError, ValueError) as exc:
            error = str(exc) or type(exc).__name__
            logger.debug("shadow request %s failed", plan.request_id, exc_info=True)
        finally:
            seconds = self.clock() - started
            if error is not None and outcome is ShadowOutcome.OK:
                outcome = ShadowOutcome.ERROR
            self.metrics.done(plan.label, outcome, seconds, tokens[0])
            if plan.log:
                texts = [c.text for p in range(len(plan.generations)) for c in acc.choices(p)]
                shadow = ShadowAnswer(
                    version=plan.shadow.version or "",
                    text=texts,
                    completion_tokens=tokens[0],
                    seconds=round(seconds, 6),
                    error=error,
                )
                self.log.add(plan.tenant, plan.adapter, plan.request_id, stable, shadow)

    async def close(self) -> None:
        """Cancel the shadows still running (shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def shadow_generations(
    generations: list[GenerationRequest], shadow: AdapterRef
) -> list[GenerationRequest]:
    """The caller's generations, for the shadow version (own request ids)."""
    return [replace(g, request_id=f"shadow-{g.request_id}", adapter=shadow) for g in generations]


class ShadowTap:
    """Watches a shadowed caller's request as it streams (its text only when the tenant
    opted in), then hands the shadow to the runner once that request has finished."""

    def __init__(self, runner: ShadowRunner, plan: ShadowPlan) -> None:
        self._runner = runner
        self.plan = plan
        n = plan.generations[0].params.n
        self._acc = ChoiceAccumulator(len(plan.generations), n) if plan.log else None
        self._tokens = 0
        self._started = runner.clock()

    def add(self, p: int, out: GenerationOutput) -> None:
        self._tokens += sum(len(c.token_ids) for c in out.choices)
        if self._acc is not None:
            self._acc.add(p, out)

    def finish(self, *, draining: bool) -> bool:
        """The caller's request ended well: start its shadow (if the engine has room)."""
        acc = self._acc
        texts = (
            [c.text for p in range(len(self.plan.generations)) for c in acc.choices(p)]
            if acc is not None
            else []
        )
        stable = ShadowAnswer(
            version=self.plan.stable_version,
            text=texts,
            completion_tokens=self._tokens,
            seconds=round(self._runner.clock() - self._started, 6),
        )
        return self._runner.submit(self.plan, stable, draining=draining)


def tap_for(
    runner: ShadowRunner | None,
    route: Route | None,
    generations: list[GenerationRequest],
    request_id: str,
    *,
    tenant: str,
    weight: float,
    log: Callable[[], bool],
) -> ShadowTap | None:
    """A tap when ``route``'s split has a shadow and this request is in its share;
    ``log`` says whether the tenant opted in to keeping both answers."""
    served = route.served if route is not None else None
    if runner is None or served is None or served.shadow is None or served.adapter is None:
        return None
    if not runner.sampled(served.shadow_percent):
        return None
    plan = ShadowPlan(
        tenant=tenant,
        weight=weight,
        adapter=served.adapter.name,
        stable_version=served.adapter.version or "",
        shadow=served.shadow,
        generations=shadow_generations(generations, served.shadow),
        request_id=request_id,
        log=log(),
    )
    return ShadowTap(runner, plan)
