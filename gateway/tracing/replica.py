"""``replica_call``: the client span of one request to a vLLM replica, and its headers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind

from gateway.tracing.record import SpanRecord, current_span
from gateway.tracing.request import PROVIDER, failed


class ReplicaCall:
    """``headers`` to send (``traceparent``, and ``tracestate`` when the trace has one);
    as a context manager, ends the span (an exception: its ``error.type``). Not current:
    the call runs across the engine stream's steps."""

    def __init__(self, span: SpanRecord | None, headers: dict[str, str]) -> None:
        self.span = span
        self.headers = headers

    async def __aenter__(self) -> ReplicaCall:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if self.span is None:
            return
        if exc is not None:
            failed(self.span, exc)
        self.span.run.end(self.span)


NO_CALL = ReplicaCall(None, {})
"""Outside a traced request: no span, no header."""


def replica_call(url: str, model: str, prompt_tokens: int) -> ReplicaCall:
    """A CLIENT span for ``POST {url}/v1/completions`` under the current engine span,
    or ``NO_CALL`` when the request is not traced (tracing off, or sampled out)."""
    engine = current_span.get()
    if not isinstance(engine, SpanRecord):
        return NO_CALL
    where = urlsplit(url)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": prompt_tokens,
        "server.address": where.hostname or "",
        "http.request.method": "POST",
        "url.full": f"{url.rstrip('/')}/v1/completions",
    }
    if where.port is not None:
        attributes["server.port"] = where.port
    run = engine.run
    span = run.start(f"text_completion {model}", engine, SpanKind.CLIENT, attributes)
    return ReplicaCall(span, run.traceparent(span))
