"""``GenerationPipeline``: every chat and completion request, top to bottom.

    check (cheap caps; 503 while draining) -> admit (in-flight slot, request + token
      budget) -> queue check (503 if the engine's queue is full)
      -> resolve model -> apply policy -> retrieve (optional)
      -> render prompt (large ones in a thread) -> exact token reservation
      -> engine slot (fair queue: wait for room, or 503) -> generate
      -> account (on leaving the admission block)

Each step is a span of the request's trace when tracing is on (``gateway.tracing``).

The HTTP layer calls ``start``: it returns once every refusal has happened (so they are
plain HTTP errors) with the ``Prepared`` request and the engine's output stream; the
admission is held until that stream ends or is closed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from functools import partial
from typing import cast

from gateway.engine.interface import GenerationOutput, GenerationRequest, Generator
from gateway.errors import ContextLengthError, InvalidRequestError
from gateway.metrics import QueueRefusal
from gateway.model_catalog import FetchNeeded, ModelCatalog
from gateway.model_io.generation_params import build_generation_params
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.pipeline.drain import Drain
from gateway.pipeline.endpoint import Endpoint, Prepared, Rendered, RenderInput
from gateway.pipeline.fair_queue import Abandoned, FairQueue
from gateway.pipeline.merge import ChoiceAccumulator, merged
from gateway.pipeline.shadow import ShadowRunner, ShadowTap, tap_for
from gateway.rag.service import RetrievalService
from gateway.settings import LimitSettings, RetrievalSettings
from gateway.tenancy.directory import Caller, Route
from gateway.tenancy.gatekeeper import Gatekeeper, Ticket
from gateway.tenancy.policy import BoundedSampling
from gateway.tracing import Trace, Tracing
from retrieval import SearchHit

Output = tuple[int, GenerationOutput]


@dataclass
class Started:
    """A request past every refusal: what it is, and its outputs as they come."""

    prepared: Prepared
    _steps: AsyncGenerator[Prepared | Output, None]

    async def outputs(self) -> AsyncIterator[Output]:
        """(prompt index, output) pairs; closing this releases the request's admission."""
        try:
            async for step in self._steps:
                yield cast(Output, step)
        finally:
            await self.close()

    async def close(self) -> None:
        await self._steps.aclose()

    async def collect(self) -> ChoiceAccumulator:
        acc = ChoiceAccumulator(len(self.prepared.generations), self.prepared.n)
        async for p, out in self.outputs():
            acc.add(p, out)
        return acc


INLINE_RENDER_CHARS = 4096
"""Prompts this small (and without retrieved sources) are tokenized on the event loop:
that takes well under a millisecond, less than the hop to a worker thread costs in CPU.
Longer ones go to a thread so a large prompt never stalls other requests."""


class GenerationPipeline:
    """Built once at start-up; holds no per-request state."""

    def __init__(
        self,
        gatekeeper: Gatekeeper,
        catalog: ModelCatalog,
        generator: Generator,
        renderer: PromptRenderer,
        retrieval: RetrievalService,
        limits: LimitSettings,
        retrieval_settings: RetrievalSettings,
        queue: FairQueue,
        drain: Drain,
        tracing: Tracing | None = None,
        shadows: ShadowRunner | None = None,
    ) -> None:
        self._gatekeeper = gatekeeper
        self._tracing = tracing or Tracing()
        self.queue = queue
        self.drain = drain
        drain.on_begin(lambda: queue.close(drain.refusal))  # queued requests: 503 at once
        self._catalog = catalog
        self._generator = generator
        self._renderer = renderer
        self._retrieval = retrieval
        self.limits = limits
        """The request limits (streams read their buffer and stall settings here)."""
        self.shadows = shadows
        """Shadow copies of split requests (``gateway.pipeline.shadow``); None: none."""
        self._completion_reserve = retrieval_settings.completion_reserve
        self._context_tokens = retrieval_settings.context_tokens

    async def start(
        self, caller: Caller, endpoint: Endpoint, gone: Abandoned | None = None
    ) -> Started:
        """``gone`` returns when the client has left: a request waiting in the engine's
        queue then leaves it (``ClientDisconnected``)."""
        steps = self._run(caller, endpoint, gone)
        prepared = await anext(steps)
        assert isinstance(prepared, Prepared)
        return Started(prepared, steps)

    async def _run(
        self, caller: Caller, endpoint: Endpoint, gone: Abandoned | None
    ) -> AsyncGenerator[Prepared | Output, None]:
        if self.drain.draining:
            self._gatekeeper.metrics.fair_queue_refused(QueueRefusal.SHUTTING_DOWN)
            raise self.drain.refusal()
        endpoint.check(self.limits)
        if endpoint.n > self.limits.max_n:  # before it can inflate the token reservation
            raise InvalidRequestError(f"n must be at most {self.limits.max_n}.", param="n")
        # Before tokenizing, only the completion budget the client named is known.
        early = endpoint.n * (endpoint.max_tokens or endpoint.default_max_tokens or 0)
        self.drain.enter()
        try:
            # The caller's own limits first (429), then the engine's queue (503).
            async with (
                self._tracing.request(caller.label, endpoint.name, endpoint.model) as trace,
                trace.entry("loragate.admission", self._gatekeeper.admit(caller, early)) as ticket,
            ):
                weight = ticket.weight
                self.queue.check(caller.label, weight)
                prepared = await self._routed_and_rendered(caller, endpoint, ticket, trace)
                trace.prepared(prepared, endpoint)
                sequences = len(prepared.generations) * prepared.n
                slot = self.queue.slot(caller.label, weight, sequences, gone)
                async with trace.entry("loragate.queue", slot):
                    yield prepared
                    ticket.engine_start()
                    tap = self._shadow_tap(ticket, prepared)
                    outputs = trace.engine(merged(self._generator.generate, prepared.generations))
                    async with aclosing(outputs):  # a drain's end closes the engine streams
                        async for p, out in outputs:
                            self.drain.check_expired()
                            for choice in out.choices:
                                ticket.produced(len(choice.token_ids))
                            ticket.schedule_wait(out.schedule_wait_seconds)
                            if out.cached_tokens:
                                prepared.cached_tokens[p] = out.cached_tokens
                                ticket.cached_tokens[p] = out.cached_tokens
                            if tap is not None:
                                tap.add(p, out)
                            yield p, out
            if tap is not None:  # the caller's request is over: admission and slot left
                tap.finish(draining=self.drain.draining)
        finally:
            self.drain.leave()

    def _shadow_tap(self, ticket: Ticket, prepared: Prepared) -> ShadowTap | None:
        caller = ticket.caller

        def opted_in() -> bool:
            tenant = (caller.directory or self._gatekeeper.directory).tenant(caller)
            return tenant is not None and tenant.shadow_log

        return tap_for(
            self.shadows,
            ticket.route,
            prepared.generations,
            prepared.id,
            tenant=caller.label,
            weight=ticket.weight,
            log=opted_in,
        )

    async def _routed_and_rendered(
        self, caller: Caller, endpoint: Endpoint, ticket: Ticket, trace: Trace
    ) -> Prepared:
        self._check_prompt_chars(endpoint)  # after admission: a 429 comes first
        route = await self._route(ticket, endpoint.model, endpoint.user)
        endpoint.check_route(route)
        bounded = route.policy.bound_sampling(endpoint.sampling())
        hits = await self._retrieve(caller, endpoint, route, trace)
        work = RenderInput(
            self._renderer,
            route,
            caller.label,
            hits,
            room=self._prompt_room(route, bounded),
            context_tokens=self._context_tokens,
        )
        with trace.step("loragate.render"):
            if hits is None and endpoint.prompt_chars() <= INLINE_RENDER_CHARS:
                rendered = endpoint.render(work)
            else:
                rendered = await asyncio.to_thread(endpoint.render, work)
        return await self._prepare(endpoint, route, bounded, rendered, ticket)

    async def _route(self, ticket: Ticket, model: str | None, user: str | None) -> Route:
        """The model for this caller; an adapter its tenant's source holds is fetched
        and loaded first (on this request, once for all requests asking at once). An
        adapter with a traffic split picks its version (an alias with a split, its adapter)
        by the sticky key: the request's ``user``, else the API key's id (else the
        caller's tenant label)."""
        catalog = self._catalog
        caller = ticket.caller
        sticky = user or caller.key_id or caller.label
        resolve = partial(catalog.resolve, caller=sticky)
        route = partial(self._gatekeeper.route, sourced=catalog.resolve_sourced, sticky=sticky)
        try:
            return route(ticket, model, resolve)
        except FetchNeeded as pending:
            await catalog.fetch(pending)
        return route(ticket, model, resolve)

    def _check_prompt_chars(self, endpoint: Endpoint) -> None:
        """Refuse, before any tokenizer spends time on it, a prompt whose characters
        cannot fit the context whatever they say (each token stands for at most
        ``max_token_chars`` of them)."""
        chars = endpoint.longest_prompt_chars()
        context = self._generator.max_model_len
        if chars > context * self._renderer.max_token_chars:
            raise ContextLengthError(
                f"This model's maximum context length is {context} tokens. However, your "
                f"{endpoint.prompt_param()} has {chars} characters, more than that many "
                "tokens can hold.",
                param=endpoint.prompt_param(),
            )

    async def _retrieve(
        self, caller: Caller, endpoint: Endpoint, route: Route, trace: Trace
    ) -> Sequence[SearchHit] | None:
        plan = endpoint.rag_plan(route.policy)
        if plan is None:
            return None
        with trace.step("loragate.retrieval") as span:
            hits = await self._retrieval.search(
                caller,
                plan.collections,
                endpoint.query(),
                top_k=plan.top_k,
                mode=plan.mode,
                param_prefix="rag.",
            )
            span.set_attributes(
                {"loragate.rag.collections": list(plan.collections), "loragate.rag.hits": len(hits)}
            )
        return hits

    def _prompt_room(self, route: Route, bounded: BoundedSampling) -> int:
        """Tokens the prompt may take with sources: the context minus the completion
        budget (or ``retrieval.completion_reserve``), at most the policy's cap."""
        room = self._generator.max_model_len - (bounded.max_tokens or self._completion_reserve)
        cap = route.policy.config.max_prompt_tokens
        return room if cap is None else min(room, cap)

    async def _prepare(
        self,
        endpoint: Endpoint,
        route: Route,
        bounded: BoundedSampling,
        rendered: Rendered,
        ticket: Ticket,
    ) -> Prepared:
        # An id, not a secret: no system call for random bytes on every request.
        request_id = f"{endpoint.id_prefix}-{random.getrandbits(128):032x}"
        fields = endpoint.sampling_fields(bounded)
        param = endpoint.prompt_param()
        generations = []
        for i, ids in enumerate(rendered.prompts):
            route.policy.check_prompt_tokens(len(ids), param=param)
            params = build_generation_params(
                fields,
                prompt_tokens=len(ids),
                max_model_len=self._generator.max_model_len,
                limits=self.limits,
                default_max_tokens=endpoint.default_max_tokens,
                prompt_param=param,
            )
            if route.policy.stop:
                params = replace(params, stop=params.stop + route.policy.stop)
            generations.append(
                GenerationRequest(
                    request_id=request_id if len(rendered.prompts) == 1 else f"{request_id}-{i}",
                    prompt_token_ids=ids,
                    params=params,
                    adapter=route.served.adapter,
                    cache_salt=route.cache_salt,
                )
            )
        await ticket.reserve_exact(
            sum(len(g.prompt_token_ids) for g in generations),
            sum(g.params.max_tokens * g.params.n for g in generations),
        )
        return Prepared(
            id=request_id,
            model=route.reported_id,
            generations=generations,
            ticket=ticket,
            rendered=rendered,
        )
