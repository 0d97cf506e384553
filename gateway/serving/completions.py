"""``CompletionService``: legacy ``/v1/completions``, one engine request per prompt."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from gateway.config import LimitSettings
from gateway.engine.interface import ChoiceOutput, Engine, GenerationOutput, GenerationRequest
from gateway.errors import InvalidRequestError, PermissionDeniedError, UnsupportedParameterError
from gateway.model_catalog import ModelCatalog
from gateway.protocol.completions import (
    UNSUPPORTED_COMPLETION_PARAMS,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    completion_prompts,
)
from gateway.protocol.logprobs import CompletionLogprobs
from gateway.serving.generation_params import (
    SamplingFields,
    build_generation_params,
    refuse_unsupported,
)
from gateway.serving.prompt_renderer import PromptRenderer
from gateway.serving.sse import DONE, event
from gateway.serving.usage import finish_reason, usage
from gateway.tenancy.directory import Caller
from gateway.tenancy.gatekeeper import Gatekeeper, Ticket
from gateway.tenancy.policy import SamplingRequest

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint


@dataclass(frozen=True)
class PreparedCompletion:
    id: str
    created: int
    model: str
    generations: list[GenerationRequest]
    echo_texts: list[str]
    include_usage: bool
    want_logprobs: bool
    ticket: Ticket


class CompletionService:
    """Built once at start-up; holds no per-request state."""

    def __init__(
        self,
        engine: Engine,
        renderer: PromptRenderer,
        catalog: ModelCatalog,
        limits: LimitSettings,
        gatekeeper: Gatekeeper,
    ) -> None:
        self._engine = engine
        self._renderer = renderer
        self._catalog = catalog
        self._limits = limits
        self._gatekeeper = gatekeeper

    def prepare(self, request: CompletionRequest, caller: Caller) -> PreparedCompletion:
        refuse_unsupported(request, UNSUPPORTED_COMPLETION_PARAMS)
        route = self._gatekeeper.route(caller, request.model, self._catalog.resolve)
        served = route.served
        policy = route.policy
        if policy.has_system_prompt:
            # Raw completions have no system turn: the policy could not be enforced.
            raise PermissionDeniedError(
                "Your tenant's policy allows chat completions only for this model.",
                code="policy_requires_chat",
            )
        bounded = policy.bound_sampling(
            SamplingRequest(request.temperature, request.top_p, request.max_tokens)
        )
        if request.best_of is not None and request.best_of != (request.n or 1):
            raise UnsupportedParameterError("best_of", "only best_of == n is available")
        if request.echo and request.logprobs is not None:
            raise UnsupportedParameterError("echo", "echo with logprobs (prompt logprobs)")
        if request.stream_options is not None and not request.stream:
            raise InvalidRequestError(
                "stream_options is only allowed when stream is true.", param="stream_options"
            )
        prompts = completion_prompts(request.prompt)
        if not prompts:
            raise InvalidRequestError("prompt must not be empty.", param="prompt")
        if len(prompts) * (request.n or 1) > self._limits.max_n * 4:
            raise InvalidRequestError("Too many prompts in one request.", param="prompt")
        cmpl_id = f"cmpl-{uuid.uuid4().hex}"
        generations, echoes = [], []
        for i, prompt in enumerate(prompts):
            if isinstance(prompt, str):
                ids = self._renderer.text(prompt)
                echo = prompt
            else:
                ids = self._check_token_ids(prompt)
                echo = self._renderer.decode(ids) if request.echo else ""
            if not ids:
                raise InvalidRequestError("prompt must not be empty.", param="prompt")
            policy.check_prompt_tokens(len(ids), param="prompt")
            params = build_generation_params(
                SamplingFields(
                    n=request.n,
                    temperature=bounded.temperature,
                    top_p=bounded.top_p,
                    max_tokens=bounded.max_tokens,
                    stop=request.stop,
                    seed=request.seed,
                    presence_penalty=request.presence_penalty,
                    frequency_penalty=request.frequency_penalty,
                    logprobs=request.logprobs,
                    extensions=request,
                ),
                prompt_tokens=len(ids),
                max_model_len=self._engine.max_model_len,
                limits=self._limits,
                default_max_tokens=DEFAULT_MAX_TOKENS,
                prompt_param="prompt",
            )
            if policy.stop:
                params = replace(params, stop=params.stop + policy.stop)
            generations.append(
                GenerationRequest(
                    request_id=f"{cmpl_id}-{i}",
                    prompt_token_ids=ids,
                    params=params,
                    adapter=served.adapter,
                    stream=bool(request.stream),
                    cache_salt=route.cache_salt,
                )
            )
            echoes.append(echo if request.echo else "")
        ticket = self._gatekeeper.admit(
            caller, route, sum(len(g.prompt_token_ids) for g in generations)
        )
        return PreparedCompletion(
            id=cmpl_id,
            created=int(time.time()),
            model=route.reported_id,
            generations=generations,
            echo_texts=echoes,
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            want_logprobs=request.logprobs is not None,
            ticket=ticket,
        )

    def _check_token_ids(self, ids: list[int]) -> list[int]:
        vocab = self._renderer.vocab_size
        if any(t < 0 or t >= vocab for t in ids):
            raise InvalidRequestError(
                f"Token ids must be in [0, {vocab}).", param="prompt", code="invalid_token_id"
            )
        return ids

    async def complete(self, cmpl: PreparedCompletion) -> CompletionResponse:
        n = cmpl.generations[0].params.n
        try:
            collected = await asyncio.gather(*(self._collect(g) for g in cmpl.generations))
        except BaseException:
            cmpl.ticket.finish(0)
            raise
        choices = []
        completion_tokens = 0
        for p, outputs in enumerate(collected):
            merged = _merge_choices(outputs, n)
            for i, c in enumerate(merged):
                completion_tokens += len(c.token_ids)
                text = cmpl.echo_texts[p] + c.text
                choices.append(
                    CompletionChoice(
                        index=p * n + i,
                        text=text,
                        logprobs=_completion_logprobs(c, 0) if cmpl.want_logprobs else None,
                        finish_reason=finish_reason(c.finish_reason or "stop"),
                    )
                )
        for outputs in collected:
            for out in outputs:
                cmpl.ticket.queued(out.queue_seconds)
        cmpl.ticket.finish(completion_tokens)
        prompt_tokens = sum(len(g.prompt_token_ids) for g in cmpl.generations)
        cached = sum(o[-1].cached_tokens for o in collected if o)
        return CompletionResponse(
            id=cmpl.id,
            created=cmpl.created,
            model=cmpl.model,
            choices=choices,
            usage=usage(prompt_tokens, completion_tokens, cached),
        )

    async def _collect(self, generation: GenerationRequest) -> list[GenerationOutput]:
        return [out async for out in self._engine.generate(generation)]

    async def stream(self, cmpl: PreparedCompletion) -> AsyncIterator[str]:
        exclude = None if cmpl.include_usage else {"usage"}
        n = cmpl.generations[0].params.n
        offsets = {
            (p, i): len(cmpl.echo_texts[p]) for p in range(len(cmpl.generations)) for i in range(n)
        }
        echoed: set[tuple[int, int]] = set()
        completion_tokens = 0
        async for p, out in self._ticketed(cmpl, _merged(self._engine, cmpl.generations)):
            for c in out.choices:
                completion_tokens += len(c.token_ids)
                key = (p, c.index)
                text = c.text
                if key not in echoed:
                    echoed.add(key)
                    text = cmpl.echo_texts[p] + text
                lp = None
                if cmpl.want_logprobs:
                    lp = _completion_logprobs(c, offsets[key])
                    offsets[key] += len(c.text)
                choice = CompletionChoice(
                    index=p * n + c.index,
                    text=text,
                    logprobs=lp,
                    finish_reason=finish_reason(c.finish_reason) if c.finish_reason else None,
                )
                body = CompletionResponse(
                    id=cmpl.id, created=cmpl.created, model=cmpl.model, choices=[choice]
                )
                yield event(body, exclude=exclude)
        if cmpl.include_usage:
            prompt_tokens = sum(len(g.prompt_token_ids) for g in cmpl.generations)
            body = CompletionResponse(
                id=cmpl.id,
                created=cmpl.created,
                model=cmpl.model,
                choices=[],
                usage=usage(prompt_tokens, completion_tokens),
            )
            yield event(body)
        yield DONE

    @staticmethod
    async def _ticketed(
        cmpl: PreparedCompletion, outputs: AsyncIterator[tuple[int, GenerationOutput]]
    ) -> AsyncIterator[tuple[int, GenerationOutput]]:
        tokens = 0
        try:
            async for p, out in outputs:
                cmpl.ticket.queued(out.queue_seconds)
                produced = sum(len(c.token_ids) for c in out.choices)
                if produced:
                    tokens += produced
                    cmpl.ticket.first_token()
                yield p, out
        finally:
            cmpl.ticket.finish(tokens)


async def _merged(
    engine: Engine, generations: list[GenerationRequest]
) -> AsyncIterator[tuple[int, GenerationOutput]]:
    """Interleave several engine streams as their outputs arrive."""
    if len(generations) == 1:
        async for out in engine.generate(generations[0]):
            yield 0, out
        return
    queue: asyncio.Queue[tuple[int, GenerationOutput | BaseException | None]] = asyncio.Queue()

    async def pump(p: int, generation: GenerationRequest) -> None:
        try:
            async for out in engine.generate(generation):
                await queue.put((p, out))
            await queue.put((p, None))
        except BaseException as exc:  # re-raised in the consumer
            await queue.put((p, exc))

    tasks = [asyncio.create_task(pump(p, g)) for p, g in enumerate(generations)]
    remaining = len(tasks)
    try:
        while remaining:
            p, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield p, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _merge_choices(outputs: list[GenerationOutput], n: int) -> list[ChoiceOutput]:
    texts = [""] * n
    ids: list[list[int]] = [[] for _ in range(n)]
    lps: list[list] = [[] for _ in range(n)]
    reasons: list[str | None] = [None] * n
    for out in outputs:
        for c in out.choices:
            texts[c.index] += c.text
            ids[c.index].extend(c.token_ids)
            lps[c.index].extend(c.logprobs or ())
            reasons[c.index] = c.finish_reason or reasons[c.index]
    return [
        ChoiceOutput(
            index=i,
            text=texts[i],
            token_ids=tuple(ids[i]),
            logprobs=tuple(lps[i]),
            finish_reason=reasons[i],
        )
        for i in range(n)
    ]


def _completion_logprobs(c: ChoiceOutput, start_offset: int) -> CompletionLogprobs:
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = start_offset
    for t in c.logprobs or ():
        tokens.append(t.token)
        values.append(t.logprob)
        tops.append(dict(t.top))
        offsets.append(offset)
        offset += len(t.token)
    return CompletionLogprobs(
        tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets
    )
