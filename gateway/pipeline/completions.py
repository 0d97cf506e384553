"""``CompletionEndpoint``: legacy ``/v1/completions``' part of the pipeline.

One engine request per prompt (a string or token ids), ``n`` choices each, indexed
``prompt * n + choice`` as OpenAI does; ``echo`` puts the prompt before its text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.engine.interface import ChoiceOutput, GenerationOutput
from gateway.errors import InvalidRequestError, PermissionDeniedError, UnsupportedParameterError
from gateway.model_io.generation_params import SamplingFields, refuse_unsupported
from gateway.model_io.usage import finish_reason
from gateway.pipeline.endpoint import Prepared, Rendered, RenderInput
from gateway.pipeline.merge import ChoiceAccumulator
from gateway.protocol.completions import (
    UNSUPPORTED_COMPLETION_PARAMS,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    completion_prompts,
)
from gateway.protocol.logprobs import CompletionLogprobs
from gateway.protocol.sse import DONE, event
from gateway.rag.grounding import RagPlan
from gateway.settings import LimitSettings
from gateway.tenancy.directory import Route
from gateway.tenancy.policy import BoundedSampling, Policy, SamplingRequest

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint


class CompletionEndpoint:
    name = "completions"
    id_prefix = "cmpl"
    default_max_tokens: int | None = DEFAULT_MAX_TOKENS

    def __init__(self, request: CompletionRequest) -> None:
        self.request = request
        self.model = request.model
        self.user = request.user
        self.stream = bool(request.stream)
        self.max_tokens = request.max_tokens
        self.n = request.n or 1
        self.include_usage = bool(request.stream_options and request.stream_options.include_usage)
        self._prompts: list[str | list[int]] = []

    def check(self, limits: LimitSettings) -> None:
        request = self.request
        refuse_unsupported(request, UNSUPPORTED_COMPLETION_PARAMS)
        if request.best_of is not None and request.best_of != self.n:
            raise UnsupportedParameterError("best_of", "only best_of == n is available")
        if request.echo and request.logprobs is not None:
            raise UnsupportedParameterError("echo", "echo with logprobs (prompt logprobs)")
        if request.stream_options is not None and not request.stream:
            raise InvalidRequestError(
                "stream_options is only allowed when stream is true.", param="stream_options"
            )
        prompts = completion_prompts(request.prompt)
        if not prompts or any(len(p) == 0 for p in prompts):
            raise InvalidRequestError("prompt must not be empty.", param="prompt")
        if len(prompts) > limits.max_messages or len(prompts) * self.n > limits.max_n * 4:
            raise InvalidRequestError("Too many prompts in one request.", param="prompt")
        self._prompts = prompts

    def check_route(self, route: Route) -> None:
        if route.policy.has_system_prompt:
            # Raw completions have no system turn: the policy could not be enforced.
            raise PermissionDeniedError(
                "Your tenant's policy allows chat completions only for this model.",
                code="policy_requires_chat",
            )

    def sampling(self) -> SamplingRequest:
        r = self.request
        return SamplingRequest(r.temperature, r.top_p, r.max_tokens)

    def rag_plan(self, policy: Policy) -> RagPlan | None:
        return None

    def query(self) -> str:
        return ""

    def prompt_param(self) -> str:
        return "prompt"

    def prompt_chars(self) -> int:
        return sum(len(p) for p in completion_prompts(self.request.prompt))

    def longest_prompt_chars(self) -> int:
        return max((len(p) for p in completion_prompts(self.request.prompt)), default=0)

    def render(self, work: RenderInput) -> Rendered:
        renderer = work.renderer
        prompts: list[list[int]] = []
        echoes: list[str] = []
        for prompt in self._prompts:
            if isinstance(prompt, str):
                ids, echo = renderer.text(prompt), prompt
            else:
                ids = _checked_token_ids(prompt, renderer.vocab_size)
                echo = renderer.decode(ids) if self.request.echo else ""
            if not ids:
                raise InvalidRequestError("prompt must not be empty.", param="prompt")
            prompts.append(ids)
            echoes.append(echo if self.request.echo else "")
        return Rendered(prompts, echoes=echoes)

    def sampling_fields(self, bounded: BoundedSampling) -> SamplingFields:
        return SamplingFields.of(self.request, bounded, logprobs=self.request.logprobs)

    # ------------------------------------------------------------------ responses

    def response_body(self, prepared: Prepared, outputs: ChoiceAccumulator) -> str:
        want_logprobs = self.request.logprobs is not None
        echoes = prepared.rendered.echoes or []
        choices = []
        for p in range(len(prepared.generations)):
            for c in outputs.choices(p):
                choices.append(
                    CompletionChoice(
                        index=p * prepared.n + c.index,
                        text=echoes[p] + c.text,
                        logprobs=_completion_logprobs(c, 0) if want_logprobs else None,
                        finish_reason=finish_reason(c.finish_reason or "stop"),
                    )
                )
        body = CompletionResponse(
            id=prepared.id,
            created=prepared.created,
            model=prepared.model,
            choices=choices,
            usage=prepared.usage(),
        )
        return body.model_dump_json()

    async def events(
        self, prepared: Prepared, outputs: AsyncIterator[tuple[int, GenerationOutput]]
    ) -> AsyncIterator[str]:
        """Text chunks as they come (the echo first in each choice's first chunk), the
        usage chunk if asked, DONE."""
        exclude = None if self.include_usage else {"usage"}
        want_logprobs = self.request.logprobs is not None
        echoes = prepared.rendered.echoes or [""] * len(prepared.generations)
        offsets: dict[tuple[int, int], int] = {}
        async for p, out in outputs:
            for c in out.choices:
                key = (p, c.index)
                text = c.text
                if key not in offsets:
                    offsets[key] = len(echoes[p])
                    text = echoes[p] + text
                lp = None
                if want_logprobs:
                    lp = _completion_logprobs(c, offsets[key])
                    offsets[key] += len(c.text)
                choice = CompletionChoice(
                    index=p * prepared.n + c.index,
                    text=text,
                    logprobs=lp,
                    finish_reason=finish_reason(c.finish_reason) if c.finish_reason else None,
                )
                body = CompletionResponse(
                    id=prepared.id, created=prepared.created, model=prepared.model, choices=[choice]
                )
                yield event(body, exclude=exclude)
        if self.include_usage:
            body = CompletionResponse(
                id=prepared.id,
                created=prepared.created,
                model=prepared.model,
                choices=[],
                usage=prepared.usage(),
            )
            yield event(body)
        yield DONE


def _checked_token_ids(ids: list[int], vocab: int) -> list[int]:
    if any(t < 0 or t >= vocab for t in ids):
        raise InvalidRequestError(
            f"Token ids must be in [0, {vocab}).", param="prompt", code="invalid_token_id"
        )
    return ids


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
