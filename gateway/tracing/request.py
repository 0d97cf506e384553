"""``RequestTrace``: one generation request's spans, as the pipeline goes.

    chat {model}                  the GenAI operation (INTERNAL): tenant, adapter, usage,
    │                             finish reasons; prompts and outputs only when captured
    ├── loragate.admission        the caller's limits (rate, in-flight, tokens)
    ├── loragate.retrieval        search of the tenant's collections (when RAG runs)
    ├── loragate.render           chat template and tokenization (sources fitted)
    ├── loragate.queue            the wait for room in the engine (fair queue)
    └── loragate.engine           generation (``gen_ai.server.time_to_first_token``); in
        └── text_completion ...   remote mode one client span per replica call

Each span records its parent (the operation's span, itself a child of the server span
current when the request started; see ``gateway.tracing.record``); only ``engine`` makes
its span current, and only while the engine's stream runs a step, so the remote engine
sees it (``replica_call``).
``NO_TRACE`` stands in when tracing is off: every method returns what it was given.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.errors import GatewayError
from gateway.tracing.record import UNSAMPLED, SpanRecord, current_span

if TYPE_CHECKING:
    from gateway.engine.interface import GenerationOutput
    from gateway.pipeline.endpoint import Prepared
    from gateway.tracing.provider import Tracing

T = TypeVar("T")
Output = tuple[int, "GenerationOutput"]

OPERATIONS = {"chat": "chat", "responses": "chat", "completions": "text_completion"}
"""GenAI ``gen_ai.operation.name`` per endpoint."""

CONTENT_EVENT = "gen_ai.client.inference.operation.details"
"""The GenAI event carrying ``gen_ai.input.messages`` and ``gen_ai.output.messages``
(recorded only with ``tracing.capture_content``)."""

PROVIDER = "vllm"
"""``gen_ai.provider.name``: the engine behind every model this gateway serves."""


class StepSpan(Protocol):
    """What a traced block may add to its span (``SpanRecord``, or ``Unrecorded``)."""

    def is_recording(self) -> bool: ...

    def set_attribute(self, key: str, value: Any) -> None: ...

    def set_attributes(self, attributes: Mapping[str, Any]) -> None: ...

    def set_status(self, status: Status) -> None: ...


class Trace(Protocol):
    """What the pipeline calls; ``RequestTrace`` and ``NO_TRACE`` implement it."""

    async def __aenter__(self) -> Trace: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        """Ends the operation's span (an exception: its ``error.type``)."""

    def step(self, name: str) -> AbstractContextManager[StepSpan]:
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
    def __enter__(self) -> StepSpan:
        return UNSAMPLED

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


class NoTrace:
    """Tracing off: nothing recorded, nothing allocated per request."""

    async def __aenter__(self) -> NoTrace:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def step(self, name: str) -> AbstractContextManager[StepSpan]:
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
    request's own steps only; the spans are ended here, whatever task ends the request.
    ``span`` None: the trace was sampled out (``Tracing.request`` then hands out
    ``NO_TRACE``)."""

    def __init__(
        self,
        tracing: Tracing,
        tenant: str,
        endpoint: str,
        model: str | None,
        parent: SpanRecord | None,
    ) -> None:
        self._capture = tracing.capture_content
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
        if parent is not None:  # the server span current in the request's task
            self.span: SpanRecord | None = parent.run.start(name, parent, attributes=attributes)
        else:  # outside the HTTP middleware: a trace of its own
            self.span = tracing.start(name, SpanKind.INTERNAL, attributes, None)
        self._output_tokens = 0
        self._finish: dict[tuple[int, int], str] = {}
        self._texts: dict[tuple[int, int], list[str]] = {}
        self._cached: dict[int, int] = {}
        self._input: list[dict[str, Any]] | None = None

    @property
    def _span(self) -> SpanRecord:
        assert self.span is not None, "a sampled-out trace is NO_TRACE"
        return self.span

    async def __aenter__(self) -> RequestTrace:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        span = self._span
        attributes = span.attributes
        attributes["gen_ai.usage.output_tokens"] = self._output_tokens
        if self._finish:
            attributes["gen_ai.response.finish_reasons"] = tuple(
                self._finish[k] for k in sorted(self._finish)
            )
        if self._cached:
            attributes["gen_ai.usage.cache_read.input_tokens"] = sum(self._cached.values())
        if self._capture:
            details = {"gen_ai.output.messages": json.dumps(self._output_messages())}
            if self._input is not None:
                details["gen_ai.input.messages"] = json.dumps(self._input)
            span.add_event(CONTENT_EVENT, details)
        if exc is not None:
            failed(span, exc)
        span.run.end(span)

    def step(self, name: str) -> AbstractContextManager[StepSpan]:
        span = self._span
        return _Step(span.run.start(name, span))

    def entry(
        self, name: str, manager: AbstractAsyncContextManager[T]
    ) -> AbstractAsyncContextManager[T]:
        return _SpannedEntry(self.step(name), manager)

    def prepared(self, prepared: Prepared, endpoint: object) -> None:
        first = prepared.generations[0]
        params = first.params
        attributes = self._span.attributes
        attributes["gen_ai.response.id"] = prepared.id
        attributes["gen_ai.request.max_tokens"] = params.max_tokens
        attributes["gen_ai.request.temperature"] = params.temperature
        attributes["gen_ai.request.top_p"] = params.top_p
        attributes["gen_ai.usage.input_tokens"] = sum(
            len(g.prompt_token_ids) for g in prepared.generations
        )
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
        if self._capture:
            self._input = input_messages(endpoint)

    async def engine(self, outputs: AsyncGenerator[Output, None]) -> AsyncGenerator[Output, None]:
        operation = self._span
        span = operation.run.start("loragate.engine", operation)
        first = True
        try:
            while True:
                # Current only while the engine runs this step (set and reset in the
                # same task), so a replica call opened here is the span's child.
                token = current_span.set(span)
                try:
                    item = await anext(outputs)
                except StopAsyncIteration:
                    break
                finally:
                    current_span.reset(token)
                if first:
                    first = False
                    span.attributes["gen_ai.server.time_to_first_token"] = (
                        time.time_ns() - span.start
                    ) / 1e9
                self._observe(item)
                yield item
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            token = current_span.set(span)
            try:
                await outputs.aclose()
            finally:
                current_span.reset(token)
                span.run.end(span)

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

    def __init__(self, span: SpanRecord) -> None:
        self.span = span

    def __enter__(self) -> StepSpan:
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is not None:
            failed(self.span, exc)
        self.span.run.end(self.span)


class _SpannedEntry(Generic[T]):
    """``manager`` whose entry runs inside ``step``; its exit as it is."""

    __slots__ = ("manager", "step")

    def __init__(
        self, step: AbstractContextManager[StepSpan], manager: AbstractAsyncContextManager[T]
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


def failed(span: StepSpan, exc: BaseException) -> None:
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
