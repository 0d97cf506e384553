"""``ChatCompletionService``: validate, render, generate, and shape chat responses."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from gateway.config import LimitSettings
from gateway.engine.interface import Engine, GenerationOutput, GenerationRequest, TokenLogprob
from gateway.errors import InvalidRequestError, UnsupportedParameterError
from gateway.model_catalog import ModelCatalog
from gateway.protocol.chat import (
    UNSUPPORTED_CHAT_PARAMS,
    ChatCitation,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChoiceDelta,
    TextContentPart,
)
from gateway.protocol.common import Usage
from gateway.protocol.logprobs import ChatLogprobs, ChatTokenLogprob, TopLogprob
from gateway.rag.grounding import PromptAssembler, plan_for
from gateway.rag.service import RetrievalService
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


@dataclass(frozen=True)
class PreparedChat:
    """A validated, admitted request, ready for the engine. Built before any byte is sent."""

    id: str
    created: int
    model: str
    generation: GenerationRequest
    include_usage: bool
    want_logprobs: bool
    ticket: Ticket
    citations: list[ChatCitation] | None = None
    """The sources in the prompt, when retrieval ran (else None: no ``citations`` field)."""


class ChatCompletionService:
    """Built once at start-up; holds no per-request state."""

    def __init__(
        self,
        engine: Engine,
        renderer: PromptRenderer,
        catalog: ModelCatalog,
        limits: LimitSettings,
        gatekeeper: Gatekeeper,
        retrieval: RetrievalService,
    ) -> None:
        self._engine = engine
        self._renderer = renderer
        self._catalog = catalog
        self._limits = limits
        self._gatekeeper = gatekeeper
        self._retrieval = retrieval

    async def prepare(self, request: ChatCompletionRequest, caller: Caller) -> PreparedChat:
        """Route, apply the policy, retrieve, tokenize, check, admit: every refusal
        happens here, before any byte of the response."""
        refuse_unsupported(request, UNSUPPORTED_CHAT_PARAMS)
        _check_defaults_only(request)
        route = self._gatekeeper.route(caller, request.model, self._catalog.resolve)
        policy = route.policy
        if request.top_logprobs is not None and not request.logprobs:
            raise InvalidRequestError(
                "top_logprobs requires logprobs to be true.", param="top_logprobs"
            )
        if request.stream_options is not None and not request.stream:
            raise InvalidRequestError(
                "stream_options is only allowed when stream is true.", param="stream_options"
            )
        max_tokens_param = (
            "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        )
        bounded = policy.bound_sampling(
            SamplingRequest(
                request.temperature,
                request.top_p,
                request.max_completion_tokens or request.max_tokens,
                max_tokens_param,
            )
        )
        prompt = PromptAssembler(
            self._renderer,
            policy,
            template_messages(request.messages),
            tenant=caller.label,
            model=route.reported_id,
        )
        plan = plan_for(request.rag, policy.rag)
        citations = None
        if plan is None:
            prompt_ids = prompt.render()
        else:
            prompt_ids, citations = await self._retrieval.ground(
                caller,
                plan,
                prompt,
                max_model_len=self._engine.max_model_len,
                completion_tokens=bounded.max_tokens,
            )
        policy.check_prompt_tokens(len(prompt_ids))
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
                logprobs=(request.top_logprobs or 0) if request.logprobs else None,
                response_format=request.response_format,
                max_tokens_param=max_tokens_param,
                extensions=request,
            ),
            prompt_tokens=len(prompt_ids),
            max_model_len=self._engine.max_model_len,
            limits=self._limits,
        )
        if policy.stop:
            params = replace(params, stop=params.stop + policy.stop)
        ticket = self._gatekeeper.admit(caller, route, len(prompt_ids))
        chat_id = f"chatcmpl-{uuid.uuid4().hex}"
        return PreparedChat(
            id=chat_id,
            created=int(time.time()),
            model=route.reported_id,
            generation=GenerationRequest(
                request_id=chat_id,
                prompt_token_ids=prompt_ids,
                params=params,
                adapter=route.served.adapter,
                stream=bool(request.stream),
                cache_salt=route.cache_salt,
            ),
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
            want_logprobs=bool(request.logprobs),
            ticket=ticket,
            citations=citations,
        )

    async def complete(self, chat: PreparedChat) -> ChatCompletionResponse:
        n = chat.generation.params.n
        texts = [""] * n
        tokens = [0] * n
        logprobs: list[list[ChatTokenLogprob]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        prompt_tokens = len(chat.generation.prompt_token_ids)
        cached = 0
        try:
            async for out in self._engine.generate(chat.generation):
                cached = out.cached_tokens
                chat.ticket.queued(out.queue_seconds)
                self._collect(out, texts, tokens, logprobs, finish)
        finally:
            chat.ticket.finish(sum(tokens))
        completion_tokens = sum(tokens)
        return ChatCompletionResponse(
            id=chat.id,
            created=chat.created,
            model=chat.model,
            choices=[
                ChatCompletionChoice(
                    index=i,
                    message=ChatCompletionMessage(content=texts[i]),
                    logprobs=ChatLogprobs(content=logprobs[i]) if chat.want_logprobs else None,
                    finish_reason=finish[i],
                )
                for i in range(n)
            ],
            usage=usage(prompt_tokens, completion_tokens, cached),
            citations=chat.citations,
        )

    @staticmethod
    def _collect(
        out: GenerationOutput,
        texts: list[str],
        tokens: list[int],
        logprobs: list[list[ChatTokenLogprob]],
        finish: list[str | None],
    ) -> None:
        for c in out.choices:
            texts[c.index] += c.text
            tokens[c.index] += len(c.token_ids)
            if c.logprobs:
                logprobs[c.index].extend(_chat_logprobs(c.logprobs))
            if c.finish_reason:
                finish[c.index] = finish_reason(c.finish_reason)

    async def stream(self, chat: PreparedChat) -> AsyncIterator[str]:
        """Role chunks, content chunks, one finish chunk per choice (the last of them
        carries ``citations`` when retrieval ran), the usage chunk if asked, DONE."""
        exclude = set() if chat.include_usage else {"usage"}

        def chunk(
            choices: list[ChatCompletionChunkChoice],
            usage: Usage | None = None,
            citations: list[ChatCitation] | None = None,
        ) -> str:
            body = ChatCompletionChunk(
                id=chat.id,
                created=chat.created,
                model=chat.model,
                choices=choices,
                usage=usage,
                citations=citations,
            )
            return event(
                body, exclude=exclude if citations is not None else exclude | {"citations"}
            )

        # Each choice's role chunk goes out with its first output, as vLLM and OpenAI do:
        # a client's time to first token then means a token, not just our headers.
        n = chat.generation.params.n
        announced: set[int] = set()
        completion_tokens = 0
        cached = 0
        finished = 0
        try:
            async for out in self._engine.generate(chat.generation):
                cached = out.cached_tokens
                chat.ticket.queued(out.queue_seconds)
                for c in out.choices:
                    if c.index not in announced:
                        announced.add(c.index)
                        role = ChoiceDelta(role="assistant", content="")
                        yield chunk([ChatCompletionChunkChoice(index=c.index, delta=role)])
                    if c.token_ids:
                        completion_tokens += len(c.token_ids)
                        chat.ticket.first_token()
                    if c.text or c.logprobs:
                        lp = ChatLogprobs(content=_chat_logprobs(c.logprobs or ()))
                        delta = ChatCompletionChunkChoice(
                            index=c.index,
                            delta=ChoiceDelta(content=c.text),
                            logprobs=lp if chat.want_logprobs else None,
                        )
                        yield chunk([delta])
                    if c.finish_reason:
                        finished += 1
                        done = ChatCompletionChunkChoice(
                            index=c.index,
                            delta=ChoiceDelta(),
                            finish_reason=finish_reason(c.finish_reason),
                        )
                        yield chunk([done], citations=chat.citations if finished == n else None)
        finally:
            chat.ticket.finish(completion_tokens)
        if chat.include_usage:
            prompt_tokens = len(chat.generation.prompt_token_ids)
            yield chunk([], usage(prompt_tokens, completion_tokens, cached))
        yield DONE


def template_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """OpenAI messages to the plain role/content dicts chat templates expect."""
    rendered = []
    for i, m in enumerate(messages):
        if m.role == "tool" or m.tool_calls is not None or m.tool_call_id is not None:
            raise UnsupportedParameterError(f"messages[{i}].tool_calls", "tool calling")
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if not isinstance(part, TextContentPart):
                    raise InvalidRequestError(
                        "Only text content parts are supported by this model.",
                        param=f"messages[{i}].content[{j}]",
                    )
        role = "system" if m.role == "developer" else m.role
        rendered.append({"role": role, "content": m.text()})
    return rendered


def _check_defaults_only(request: ChatCompletionRequest) -> None:
    if request.modalities is not None and request.modalities != ["text"]:
        raise UnsupportedParameterError("modalities", "only ['text'] is available")
    if request.service_tier not in (None, "auto", "default"):
        raise UnsupportedParameterError("service_tier")
    if request.store:
        raise UnsupportedParameterError("store", "this server does not store completions")
    if request.metadata is not None:
        raise UnsupportedParameterError("metadata", "metadata is only used with store")


def _chat_logprobs(items: tuple[TokenLogprob, ...]) -> list[ChatTokenLogprob]:
    return [
        ChatTokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=list(t.token.encode()),
            top_logprobs=[
                TopLogprob(token=tok, logprob=lp, bytes=list(tok.encode())) for tok, lp in t.top
            ],
        )
        for t in items
    ]
