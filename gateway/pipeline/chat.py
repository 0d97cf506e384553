"""``ChatEndpoint``: ``/v1/chat/completions``'s part of the pipeline.

Its own checks, its prompt (the conversation under the policy, with sources when
retrieval runs) and its response shapes (a completion object, or chunks as OpenAI
streams them). Everything else is the pipeline's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from json.encoder import encode_basestring as json_string  # C; UTF-8 kept as is

from gateway.engine.interface import ChoiceOutput, GenerationOutput, TokenLogprob
from gateway.errors import InvalidRequestError, UnsupportedParameterError
from gateway.model_io.generation_params import SamplingFields, refuse_unsupported
from gateway.model_io.tool_format import call_text, result_text, tools_text
from gateway.model_io.tool_set import ToolBounds, ToolSet
from gateway.model_io.tool_stream import ArgumentsPiece, CallExtractor, CallStart, Piece, TextPiece
from gateway.model_io.usage import finish_reason
from gateway.pipeline.chat_prompt import ChatPrompt
from gateway.pipeline.endpoint import Prepared, Rendered, RenderInput
from gateway.pipeline.merge import ChoiceAccumulator
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
from gateway.protocol.sse import DONE, event
from gateway.protocol.tools import FunctionDelta, ToolCall, ToolCallDelta
from gateway.rag.grounding import RagPlan, last_user_turn, plan_for
from gateway.settings import LimitSettings
from gateway.tenancy.directory import Route
from gateway.tenancy.policy import BoundedSampling, Policy, SamplingRequest


class ChatEndpoint:
    name = "chat"
    id_prefix = "chatcmpl"
    default_max_tokens: int | None = None

    def __init__(self, request: ChatCompletionRequest) -> None:
        self.request = request
        self.model = request.model
        self.user = request.user
        self.stream = bool(request.stream)
        self.max_tokens = request.max_completion_tokens or request.max_tokens
        self.n = request.n or 1
        self.include_usage = bool(request.stream_options and request.stream_options.include_usage)
        self._max_tokens_param = (
            "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        )
        self._messages: list[dict[str, str]] = []
        self.tools: ToolSet | None = None

    def check(self, limits: LimitSettings) -> None:
        request = self.request
        refuse_unsupported(request, UNSUPPORTED_CHAT_PARAMS)
        _check_defaults_only(request)
        if len(request.messages) > limits.max_messages:
            raise InvalidRequestError(
                f"At most {limits.max_messages} messages are allowed.", param="messages"
            )
        bounds = ToolBounds(limits.max_tools, limits.max_tool_definition_bytes)
        self.tools = ToolSet.of(
            request.tools, request.tool_choice, request.parallel_tool_calls, bounds
        )
        if self.tools is not None and self.tools.active:
            if request.logprobs:
                raise UnsupportedParameterError("logprobs", "logprobs with tools")
            if self.tools.constraint() is not None and request.response_format is not None:
                raise InvalidRequestError(
                    "response_format cannot be combined with a required or named tool_choice.",
                    param="response_format",
                )
        if request.top_logprobs is not None and not request.logprobs:
            raise InvalidRequestError(
                "top_logprobs requires logprobs to be true.", param="top_logprobs"
            )
        if request.stream_options is not None and not request.stream:
            raise InvalidRequestError(
                "stream_options is only allowed when stream is true.", param="stream_options"
            )
        self._messages = template_messages(request.messages)

    def check_route(self, route: Route) -> None:
        if self.request.tools:
            route.policy.check_tools([t.function.name for t in self.request.tools])

    def sampling(self) -> SamplingRequest:
        r = self.request
        return SamplingRequest(r.temperature, r.top_p, self.max_tokens, self._max_tokens_param)

    def rag_plan(self, policy: Policy) -> RagPlan | None:
        return plan_for(self.request.rag, policy.rag)

    def query(self) -> str:
        return last_user_turn(self._messages)

    def prompt_param(self) -> str:
        return "messages"

    def prompt_chars(self) -> int:
        return sum(len(m["content"]) for m in self._messages)

    def longest_prompt_chars(self) -> int:
        return self.prompt_chars()

    def render(self, work: RenderInput) -> Rendered:
        prompt = ChatPrompt(
            work.renderer,
            work.route.policy,
            self._messages,
            tenant=work.tenant,
            model=work.route.reported_id,
            tools=tools_text(self.tools) if self.tools and self.tools.active else None,
        )
        if work.hits is None:
            return Rendered([prompt.render()])
        ids, citations = prompt.render_grounded(
            work.hits, room=work.room, context_tokens=work.context_tokens
        )
        return Rendered([ids], citations=citations)

    def sampling_fields(self, bounded: BoundedSampling) -> SamplingFields:
        r = self.request
        return SamplingFields.of(
            r,
            bounded,
            logprobs=(r.top_logprobs or 0) if r.logprobs else None,
            response_format=r.response_format,
            max_tokens_param=self._max_tokens_param,
            constraint=self.tools.constraint() if self.tools else None,
        )

    # ------------------------------------------------------------------ responses

    def response_body(self, prepared: Prepared, outputs: ChoiceAccumulator) -> str:
        want_logprobs = bool(self.request.logprobs)
        choices = []
        for c in outputs.choices(0):
            logprobs = ChatLogprobs(content=_chat_logprobs(c.logprobs or ()))
            calls = CallExtractor(self.tools)
            calls.feed(c.text)
            calls.finish()
            message = ChatCompletionMessage(content=calls.text or None)
            if calls.called:
                message.tool_calls = [
                    ToolCall.model_validate(
                        {"id": k.id, "function": {"name": k.name, "arguments": k.arguments}}
                    )
                    for k in calls.calls
                ]
            else:
                message.content = calls.text
            choices.append(
                ChatCompletionChoice(
                    index=c.index,
                    message=message,
                    logprobs=logprobs if want_logprobs else None,
                    finish_reason=calls.finish_reason(finish_reason(c.finish_reason or "stop")),
                )
            )
        body = ChatCompletionResponse(
            id=prepared.id,
            created=prepared.created,
            model=prepared.model,
            choices=choices,
            usage=prepared.usage(),
            citations=prepared.rendered.citations,
        )
        return body.json_body()

    async def events(
        self, prepared: Prepared, outputs: AsyncIterator[tuple[int, GenerationOutput]]
    ) -> AsyncIterator[str]:
        """Role chunks, content chunks, one finish chunk per choice (the last of them
        carries ``citations`` when retrieval ran), the usage chunk if asked, DONE.

        Each choice's role chunk goes out with its first output, as vLLM and OpenAI do:
        a client's time to first token then means a token, not just our headers.
        """
        stream = _ChatStream(prepared, self.include_usage, bool(self.request.logprobs))
        tools = self.tools if self.tools is not None and self.tools.active else None
        async for _, out in outputs:
            for c in out.choices:
                if c.index not in stream.announced:
                    yield stream.role(c.index)
                if tools is not None:
                    for text in stream.tool_events(c, tools):
                        yield text
                    continue
                if c.text and not stream.want_logprobs:
                    yield stream.text(c.index, c.text)
                elif c.text or c.logprobs:
                    yield stream.content(c)
                if c.finish_reason:
                    yield stream.finished(c.index, finish_reason(c.finish_reason))
        if self.include_usage:
            yield stream.chunk([], prepared.usage())
        yield DONE


class _ChatStream:
    """The state of one streamed chat response: which choices were announced, how many
    finished, each choice's text-chunk template and tool-call extractor."""

    def __init__(self, prepared: Prepared, include_usage: bool, want_logprobs: bool) -> None:
        self.prepared = prepared
        self.want_logprobs = want_logprobs
        self.announced: set[int] = set()
        self._exclude = set() if include_usage else {"usage"}
        self._finished = 0
        # Per choice: the text chunk's event around its content (see _text_chunk_template).
        self._text_chunks: dict[int, tuple[str, str]] = {}
        self._extractors: dict[int, CallExtractor] = {}

    def chunk(
        self,
        choices: list[ChatCompletionChunkChoice],
        usage: Usage | None = None,
        cited: list[ChatCitation] | None = None,
    ) -> str:
        p = self.prepared
        body = ChatCompletionChunk(
            id=p.id, created=p.created, model=p.model, choices=choices, usage=usage, citations=cited
        )
        exclude = self._exclude if cited is not None else self._exclude | {"citations"}
        return event(body, exclude=exclude)

    def role(self, index: int) -> str:
        self.announced.add(index)
        role = ChoiceDelta(role="assistant", content="")
        return self.chunk([ChatCompletionChunkChoice(index=index, delta=role)])

    def text(self, index: int, text: str) -> str:
        around = self._text_chunks.get(index)
        if around is None:
            around = self._text_chunks[index] = _text_chunk_template(self.chunk, index)
        return around[0] + json_string(text) + around[1]

    def content(self, c: ChoiceOutput) -> str:
        lp = ChatLogprobs(content=_chat_logprobs(c.logprobs or ()))
        choice = ChatCompletionChunkChoice(
            index=c.index,
            delta=ChoiceDelta(content=c.text),
            logprobs=lp if self.want_logprobs else None,
        )
        return self.chunk([choice])

    def finished(self, index: int, reason: str) -> str:
        """The choice's finish chunk; the last choice to finish carries the citations."""
        self._finished += 1
        done = ChatCompletionChunkChoice(index=index, delta=ChoiceDelta(), finish_reason=reason)
        last = self._finished == self.prepared.n
        return self.chunk([done], cited=self.prepared.rendered.citations if last else None)

    def tool_events(self, c: ChoiceOutput, tools: ToolSet) -> list[str]:
        """Text and tool-call pieces of one output; its finish chunk if it finished."""
        calls = self._extractors.setdefault(c.index, CallExtractor(tools))
        pieces = calls.feed(c.text)
        if c.finish_reason:
            pieces += calls.finish()
        events = [self.chunk([_piece_choice(c.index, piece)]) for piece in pieces]
        if c.finish_reason:
            reason = calls.finish_reason(finish_reason(c.finish_reason))
            events.append(self.finished(c.index, reason))
        return events


def _piece_choice(index: int, piece: Piece) -> ChatCompletionChunkChoice:
    """A chunk's choice for one piece of text or of a tool call."""
    if isinstance(piece, TextPiece):
        delta = ChoiceDelta(content=piece.text)
    elif isinstance(piece, CallStart):
        call = ToolCallDelta(
            index=piece.index,
            id=piece.id,
            type="function",
            function=FunctionDelta(name=piece.name, arguments=""),
        )
        delta = ChoiceDelta(tool_calls=[call])
    else:
        assert isinstance(piece, ArgumentsPiece)
        fragment = ToolCallDelta(index=piece.index, function=FunctionDelta(arguments=piece.text))
        delta = ChoiceDelta(tool_calls=[fragment])
    return ChatCompletionChunkChoice(index=index, delta=delta)


TEXT_MARK = "\x00text\x00"
"""Stands for a chunk's content while its template is made (no JSON string holds it raw)."""


def _text_chunk_template(
    chunk: Callable[[list[ChatCompletionChunkChoice]], str], index: int
) -> tuple[str, str]:
    """The event of a text-only chunk of choice ``index``, cut around its content: most
    chunks of a stream are these, and only the text changes (so each costs one JSON
    string, not three models built and serialized)."""
    choice = ChatCompletionChunkChoice(index=index, delta=ChoiceDelta(content=TEXT_MARK))
    before, after = chunk([choice]).split(json_string(TEXT_MARK))
    return before, after


def template_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """OpenAI messages to the plain role/content dicts chat templates expect.

    Calls in assistant turns become the fallback format's call text; a tool turn keeps
    the role ``tool`` (so retrieval still searches for the user's last question, and
    sources go into the user's turn) with the fallback format's result text, and becomes
    a user turn when the prompt is rendered (``ChatPrompt``)."""
    rendered = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(messages):
        if m.tool_calls is not None and m.role != "assistant":
            raise InvalidRequestError(
                "Only assistant messages may carry tool_calls.", param=f"messages[{i}].tool_calls"
            )
        if m.role == "tool":
            if m.tool_call_id is None or m.tool_call_id not in call_names:
                raise InvalidRequestError(
                    "A tool message's tool_call_id must name a call of an earlier assistant "
                    "message.",
                    param=f"messages[{i}].tool_call_id",
                )
            name = call_names[m.tool_call_id]
            rendered.append({"role": "tool", "content": result_text(name, m.text())})
            continue
        if m.tool_call_id is not None:
            raise InvalidRequestError(
                "Only tool messages may carry tool_call_id.", param=f"messages[{i}].tool_call_id"
            )
        if m.tool_calls:
            lines = [m.text()] if m.text() else []
            for call in m.tool_calls:
                call_names[call.id] = call.function.name
                lines.append(call_text(call.function.name, call.function.arguments))
            rendered.append({"role": "assistant", "content": "\n".join(lines)})
            continue
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
