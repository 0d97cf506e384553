"""``RemoteEngine``: the ``Engine`` protocol over a pool of vLLM OpenAI servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, suppress

from gateway.engine.interface import (
    AdapterLoadRefused,
    AdapterRef,
    AdapterResidency,
    GenerationOutput,
    GenerationRequest,
    SchedulerFigures,
)
from gateway.engine.remote.client import (
    ReplicaError,
    ReplicaRejectedError,
    ReplicaUnreachableError,
)
from gateway.engine.remote.completions import StreamDecoder, completion_body
from gateway.engine.remote.placement import Placement
from gateway.engine.remote.replicas import Replica, ReplicaPool
from gateway.errors import EngineFailureError, EngineUnavailableError, InvalidRequestError
from gateway.tracing import replica_call

logger = logging.getLogger(__name__)

REFUSED_MESSAGE = "The inference server refused the request."
"""What a client hears when a replica answers 4xx: never the replica's own text."""

EVENT_BYTES_PER_PROMPT_TOKEN = 12
"""Bytes a prompt token may take in the first stream event (vLLM repeats the prompt's
token ids there); the event cap is 1 MiB plus this per prompt token."""


class RemoteEngine:
    """Sends each generation to one replica (adapter affinity, see ``placement``).

    A failure before the first output is retried once on another replica; after it,
    the stream raises ``EngineFailureError``. Adapters are registered on a replica the
    first time it serves them (``load``/``pin``: eagerly on the home replica) under
    their versioned ``engine_name``, never reloaded in place. Concurrency rule: one
    event loop (the server's); the health monitor is a task on it.
    """

    def __init__(
        self,
        pool: ReplicaPool,
        *,
        base_model: str,
        max_model_len: int,
        placement: Placement,
    ) -> None:
        self.pool = pool
        self.base_model = base_model
        self.max_model_len = max_model_len
        self.placement = placement
        self._pinned: dict[str, AdapterRef] = {}
        self._retired: set[str] = set()
        self._monitor: asyncio.Task[None] | None = None
        pool.on_probe = self._after_probe

    def ensure_monitor(self) -> None:
        """Start the health monitor on the running loop (once)."""
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.get_running_loop().create_task(
                self.pool.run(), name="remote-replica-monitor"
            )

    # ---------------------------------------------------------------- generation

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        self.ensure_monitor()
        tried: set[str] = set()
        yielded = False
        for attempt in (1, 2):
            replica = self._choose(request.adapter, tried)
            tried.add(replica.url)
            try:
                async with aclosing(self._generate_on(replica, request)) as outputs:
                    async for out in outputs:
                        yielded = True
                        yield out
                return
            except ReplicaRejectedError as exc:
                if yielded:
                    raise EngineFailureError("The inference engine failed mid-stream.") from exc
                if exc.status != 404:
                    # The replica's own words may name its paths and hosts: log only.
                    logger.warning("replica %s refused a request: %s", replica.url, exc.message)
                    raise InvalidRequestError(REFUSED_MESSAGE) from exc
                if request.adapter is not None and attempt == 1:
                    # The replica lost the adapter's name (restarted since the last
                    # probe): load it again there and retry.
                    replica.forget(request.adapter.engine_name)
                    tried.discard(replica.url)
                    continue
                failure: Exception = exc  # it does not serve the model: misconfigured
            except (ReplicaUnreachableError, AdapterLoadRefused) as exc:
                if yielded:
                    logger.warning("replica %s failed mid-stream: %s", replica.url, exc)
                    raise EngineFailureError("The inference engine failed mid-stream.") from exc
                if isinstance(exc, ReplicaUnreachableError) and exc.network:
                    self.pool.eject(replica, str(exc))  # unreachable, not merely slow
                failure = exc
            logger.warning("replica %s failed before the first token: %s", replica.url, failure)
            if attempt == 2:
                raise EngineUnavailableError("No replica could serve this request.") from failure

    async def _generate_on(
        self, replica: Replica, request: GenerationRequest
    ) -> AsyncGenerator[GenerationOutput, None]:
        adapter = request.adapter
        with replica.busy(adapter.engine_name if adapter else None):
            if adapter is not None:
                await self._ensure_on(replica, adapter)
            decoder = StreamDecoder(request)
            model = adapter.engine_name if adapter else self.base_model
            body = completion_body(request, model)
            cap = (1 << 20) + EVENT_BYTES_PER_PROMPT_TOKEN * len(request.prompt_token_ids)
            # A client span when the request is traced; its traceparent goes to vLLM.
            call = replica_call(replica.url, model, len(request.prompt_token_ids))
            events = replica.client.stream_completion(
                body, max_event_bytes=cap, headers=call.headers
            )
            async with call, aclosing(events):
                async for event in events:
                    out = decoder.feed(event)
                    if out is not None:
                        yield out
            last = decoder.finish()
            if last is not None:
                yield last

    def _choose(self, adapter: AdapterRef | None, tried: set[str]) -> Replica:
        healthy = {r.url: r for r in self.pool.healthy() if r.url not in tried}
        urls = sorted(healthy)
        if adapter is None:
            url = self.placement.for_base(urls, lambda u: healthy[u].in_flight)
        else:
            name = adapter.engine_name
            url = self.placement.for_adapter(
                name,
                urls,
                lambda u: healthy[u].adapter_in_flight[name],
                lambda u: healthy[u].in_flight,
            )
        if url is None:
            raise EngineUnavailableError("No healthy replica is available.")
        return healthy[url]

    async def _ensure_on(self, replica: Replica, adapter: AdapterRef) -> bool:
        self._retired.discard(adapter.engine_name)
        try:
            return await replica.ensure_adapter(adapter)
        except ReplicaRejectedError as exc:
            raise AdapterLoadRefused(
                f"Replica {replica.url} could not load {adapter.engine_name}: {exc.message}"
            ) from exc

    # ------------------------------------------------------------------ adapters

    def _home(self, adapter: AdapterRef) -> Replica:
        return self._choose(adapter, set())

    async def load(self, adapter: AdapterRef) -> bool:
        """Register ``adapter`` on its home replica now (prewarm, activation)."""
        self.ensure_monitor()
        replica = self._home(adapter)
        try:
            return await self._ensure_on(replica, adapter)
        except ReplicaUnreachableError as exc:
            self.pool.eject(replica, str(exc))
            raise EngineUnavailableError(f"Replica {replica.url} did not answer.") from exc

    async def unload(self, adapter: AdapterRef) -> bool:
        """Deregister ``adapter`` everywhere (vLLM keeps the weights until evicted)."""
        name = adapter.engine_name
        self._pinned.pop(name, None)
        self._retired.add(name)
        found = False
        for replica in list(self.pool.replicas.values()):
            if name not in replica.adapters:
                continue
            found = True
            replica.forget(name)
            try:
                await replica.client.unload_adapter(name)
            except ReplicaError as exc:  # gone already, or the replica is down
                logger.info("unload of %s on %s: %s", name, replica.url, exc)
        return found

    async def pin(self, adapter: AdapterRef) -> bool:
        """Keep ``adapter`` on its home replica: loaded now and again after a restart."""
        await self.load(adapter)
        self._pinned[adapter.engine_name] = adapter
        return True

    async def _after_probe(self, replica: Replica, lost: list[str]) -> None:
        for name in [n for n in self._retired if n in replica.adapters]:
            replica.forget(name)
            with suppress(ReplicaError):
                await replica.client.unload_adapter(name)
        for ref in list(self._pinned.values()):
            if ref.engine_name in replica.adapters:
                continue
            try:
                if self._home(ref) is replica:
                    await replica.ensure_adapter(ref)
            except (ReplicaError, EngineUnavailableError) as exc:
                logger.warning("could not reload pinned %s: %s", ref.engine_name, exc)

    async def residency(self) -> AdapterResidency:
        """Ids of adapters registered on some healthy replica; no slot view."""
        by_replica = {
            replica.url: frozenset(
                record.ref.lora_id for record in replica.adapters.values() if record.ref
            )
            for replica in self.pool.healthy()
        }
        loaded = frozenset().union(*by_replica.values()) if by_replica else frozenset()
        return AdapterResidency(loaded=loaded, slots=None, replicas=by_replica)

    # -------------------------------------------------------------------- health

    def figures(self) -> SchedulerFigures:
        replicas = list(self.pool.replicas.values())
        adapters = {name for r in replicas for name in r.adapter_in_flight}
        return SchedulerFigures(
            running=sum(r.in_flight for r in replicas), adapters_running=len(adapters)
        )

    async def check_health(self) -> None:
        self.ensure_monitor()
        if not self.pool.probed:
            await self.pool.refresh()
        if not self.pool.healthy():
            raise EngineUnavailableError("No inference replica is healthy.")

    async def shutdown(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        await self.pool.aclose()
