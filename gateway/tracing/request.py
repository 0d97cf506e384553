"""``RequestTrace``: one generation request's spans, as the pipeline goes.

    chat {model}                  the GenAI operation (INTERNAL): tenant, adapter, usage,
    │                             finish reasons; prompts and outputs only when captured
    ├── loragate.admission        the caller's limits (rate, in-flight, tokens)
    ├── loragate.retrieval        search of the tenant's collections (when RAG runs)
    ├── loragate.render           chat template and tokenization (sources fitted)
    ├── loragate.queue            the wait for room in the engine (fair queue)
    └── loragate.engine           generation (``gen_ai.server.time_to_first_token``); in
        └── text_completion ...   remote mode one client span per replica call

Each span has an explicit parent (the operation's span, itself a child of the server
span current when the request started); only ``engine`` makes its span current, and only
while the engine's stream runs a step, so the remote engine sees it (``replica_call``).
``NO_TRACE`` stands in when tracing is off: every method returns what it was given.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from opentelemetry import context as otel_context
from opentelemetry.trace import (
    INVALID_SPAN,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    set_span_in_context,
)

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.engine.interface import GenerationOutput
    from gateway.pipeline.endpoint import Prepared

T = TypeVar("T")
Output = tuple[int, "GenerationOutput"]

TRACER_KEY = otel_context.create_key("loragate-tracer")
"""The request's tracer in the OTel context while the engine runs a step: the remote
engine's ``replica_call`` opens its client span with it."""

OPERATIONS = {"chat": "chat", "responses": "chat", "completions": "text_completion"}
"""GenAI ``gen_ai.operation.name`` per endpoint."""

CONTENT_EVENT = "gen_ai.client.inference.operation.details"
"""The GenAI event carrying ``gen_ai.input.messages`` and ``gen_ai.output.messages``
(recorded only with ``tracing.capture_content``)."""

PROVIDER = "vllm"
"""``gen_ai.provider.name``: the engine behind every model this gateway serves."""


class Trace(Protocol):
    """What the pipeline calls; ``RequestTrace`` and ``NO_TRACE`` implement it."""

    async def __aenter__(self) -> Trace: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        """Ends the operation's span (an exception: its ``error.type``)."""

    def step(self, name: str) -> AbstractContextManager[Span]:
        """A child span around a block of the request."""

    def entry(
        self, name: str, manager: AbstractAsyncContextManager[T]
    ) -> AbstractAsyncContextManager[T]:
        """``manager`` with a child span around its entry (a wait for admission, a slot)."""

    def prepared(self, prepared: Prepared, endpoint: object) -> None:
        """The request as routed and rendered: response id, adapter, token budget."""

    def engine(self, outputs: AsyncGenerator[Output, None]) -> AsyncGenerator[Output, None]:
        """The engine's stream inside the ``loragate.engine`` span."""


class _NoSpan:
    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class NoTrace:
    """Tracing off: nothing recorded, nothing allocated per request."""

    async def __aenter__(self) -> NoTrace:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def step(self, name: str) -> AbstractContextManager[Span]:
        return _NO_SPAN

    def entry(
        self, name: str, manager: AbstractAsyncContextManager[T]
    ) -> AbstractAsyncContextManager[T]:
        return manager

    def prepared(self, prepared: Prepared, endpoint: object) -> None:
        return None

    def engine(self, outputs: AsyncGenerator[Output, None]) -> AsyncGenerator[Output, None]:
        return outputs


NO_TRACE = NoTrace()


class RequestTrace:
    """The spans of one request (see the module's tree). Concurrency rule: used by the
    request's own steps only; the spans are ended here, whatever task ends the request."""

    def __init__(
        self,
        tracer: Tracer,
        tenant: str,
        endpoint: str,
        model: str | None,
        capture_content: bool,
    ) -> None:
        self._tracer = tracer
        self._capture = capture_content
        operation = OPERATIONS.get(endpoint, endpoint)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER,
            "loragate.tenant": tenant,
            "loragate.endpoint": endpoint,
        }
        if model is not None:
            attributes["gen_ai.request.model"] = model
        name = f"{operation} {model}" if model else operation
        # The parent: the server span current in the request's task at this point.
        self.span = tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
        self._context = set_span_in_context(self.span)
        self._output_tokens = 0
        self._finish: dict[tuple[int, int], str] = {}
        self._texts: dict[tuple[int, int], list[str]] = {}
        self._cached: dict[int, int] = {}
        self._input: list[dict[str, Any]] | None = None

    async def __aenter__(self) -> RequestTrace:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        span = self.span
        ended: dict[str, Any] = {"gen_ai.usage.output_tokens": self._output_tokens}
        if self._finish:
            ended["gen_ai.response.finish_reasons"] = [
                self._finish[k] for k in sorted(self._finish)
            ]
        if self._cached:
            ended["gen_ai.usage.cache_read.input_tokens"] = sum(self._cached.values())
        span.set_attributes(ended)
        if self._capture:
            details = {"gen_ai.output.messages": json.dumps(self._output_messages())}
            if self._input is not None:
                details["gen_ai.input.messages"] = json.dumps(self._input)
            span.add_event(CONTENT_EVENT, details)
        if exc is not None:
            failed(span, exc)
        span.end()

    def step(self, name: str) -> AbstractContextManager[Span]:
        return _Step(self._tracer.start_span(name, context=self._context))

    def entry(
        self, name: str, manager: AbstractAsyncContextManager[T]
    ) -> AbstractAsyncContextManager[T]:
        return _SpannedEntry(self.step(name), manager)

    def prepared(self, prepared: Prepared, endpoint: object) -> None:
        first = prepared.generations[0]
        params = first.params
        attributes: dict[str, Any] = {
            "gen_ai.response.id": prepared.id,
            "gen_ai.request.max_tokens": params.max_tokens,
            "gen_ai.request.temperature": params.temperature,
            "gen_ai.request.top_p": params.top_p,
            "gen_ai.usage.input_tokens": sum(len(g.prompt_token_ids) for g in prepared.generations),
        }
        if params.n != 1:
            attributes["gen_ai.request.choice.count"] = params.n
        if params.seed is not None:
            attributes["gen_ai.request.seed"] = params.seed
        if first.adapter is not None:
            attributes["loragate.adapter"] = first.adapter.name
            if first.adapter.version is not None:
                attributes["loragate.adapter.version"] = first.adapter.version
            attributes["gen_ai.response.model"] = first.adapter.engine_name
        else:
            attributes["gen_ai.response.model"] = prepared.model
        self.span.set_attributes(attributes)
        if self._capture:
            self._input = input_messages(endpoint)

    async def engine(self, outputs: AsyncGenerator[Output, None]) -> AsyncGenerator[Output, None]:
        span = self._tracer.start_span("loragate.engine", context=self._context)
        running = otel_context.set_value(TRACER_KEY, self._tracer, set_span_in_context(span))
        started = time.monotonic()
        first = True
        try:
            while True:
                # Current only while the engine runs this step (attached and detached in
                # the same task), so a replica call opened here is the span's child.
                token = otel_context.attach(running)
                try:
                    item = await anext(outputs)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                if first:
                    first = False
                    span.set_attribute(
                        "gen_ai.server.time_to_first_token", time.monotonic() - started
                    )
                self._observe(item)
                yield item
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            token = otel_context.attach(running)
            try:
                await outputs.aclose()
            finally:
                otel_context.detach(token)
                span.end()

    def _observe(self, item: Output) -> None:
        p, out = item
        for c in out.choices:
            self._output_tokens += len(c.token_ids)
            if c.finish_reason:
                self._finish[(p, c.index)] = c.finish_reason
            if self._capture and c.text:
                self._texts.setdefault((p, c.index), []).append(c.text)
        if out.cached_tokens:
            self._cached[p] = out.cached_tokens

    def _output_messages(self) -> list[dict[str, Any]]:
        """GenAI ``gen_ai.output.messages``: one assistant message per choice."""
        return [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": "".join(self._texts.get(k, []))}],
                "finish_reason": self._finish.get(k, ""),
            }
            for k in sorted(set(self._texts) | set(self._finish))
        ]


class _Step:
    """Ends ``span`` on leaving the block (an exception: its ``error.type``)."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is not None:
            failed(self.span, exc)
        self.span.end()


class _SpannedEntry(Generic[T]):
    """``manager`` whose entry runs inside ``step``; its exit as it is."""

    __slots__ = ("manager", "step")

    def __init__(
        self, step: AbstractContextManager[Span], manager: AbstractAsyncContextManager[T]
    ) -> None:
        self.step = step
        self.manager = manager

    async def __aenter__(self) -> T:
        with self.step:
            return await self.manager.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool | None:
        return await self.manager.__aexit__(kind, exc, tb)


def failed(span: Span, exc: BaseException) -> None:
    """``error.type`` on ``span``; ERROR status for the gateway's own failures (5xx and
    unexpected exceptions), not for a request refused (4xx) or a client that left."""
    if isinstance(exc, GatewayError):
        span.set_attribute("error.type", exc.code or exc.error_type)
        if exc.status_code >= 500:
            span.set_status(Status(StatusCode.ERROR, exc.message))
        return
    if isinstance(exc, GeneratorExit | asyncio.CancelledError):
        span.set_attribute("error.type", "cancelled")
        return
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))


def input_messages(endpoint: object) -> list[dict[str, Any]] | None:
    """GenAI ``gen_ai.input.messages`` of a chat, responses or completions request (as
    the client sent them, before the tenant's policy), or None for another kind."""
    chat = getattr(endpoint, "chat", None) if hasattr(type(endpoint), "chat") else None
    request = getattr(chat if chat is not None else endpoint, "request", None)
    messages = getattr(request, "messages", None)
    if isinstance(messages, list):
        return [
            {"role": m.role, "parts": [{"type": "text", "content": m.text()}]} for m in messages
        ]
    prompt = getattr(request, "prompt", None)
    if prompt is None:
        return None
    prompts = (
        prompt
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
        else [prompt]
    )
    return [
        {
            "role": "user",
            "parts": [{"type": "text", "content": p if isinstance(p, str) else str(p)}],
        }
        for p in prompts
    ]
