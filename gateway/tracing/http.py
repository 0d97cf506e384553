"""``TraceMiddleware``: one server span per HTTP request, continuing a caller's trace."""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.request_context import labels_var, request_id_var
from gateway.tracing.provider import Tracing

W3C = TraceContextTextMapPropagator()
"""W3C Trace Context (``traceparent``, ``tracestate``): what callers and vLLM speak."""

TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
UNTRACED = frozenset({"/metrics", "/health", "/ready"})
"""Probes and scrapes: many, and nothing to follow."""


class TraceMiddleware:
    """Pure ASGI middleware (streams pass through untouched), added only when tracing
    is on. The span is current in the request's task for the whole request, the
    streamed body included, so the pipeline's spans are its children; it is named
    ``{method} {route}`` once routing has matched, and carries the tenant, model and
    adapter the services found (``RequestLabels``)."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        assert tracing.tracer is not None, "add the middleware only when tracing is on"
        self.app = app
        self.tracer = tracing.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in UNTRACED:
            await self.app(scope, receive, send)
            return
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in TRACE_HEADERS
        }
        parent = W3C.extract(carrier) if carrier else otel_context.Context()
        method = scope.get("method", "GET")
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope.get("path", ""),
                "url.scheme": scope.get("scheme", "http"),
                "loragate.request_id": request_id_var.get(),
            },
        )
        status = 500

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = otel_context.attach(set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            otel_context.detach(token)
            _finish(span, scope, status)


def _finish(span: Any, scope: Scope, status: int) -> None:
    if not span.is_recording():  # sampled out
        span.end()
        return
    ended: dict[str, Any] = {"http.response.status_code": status}
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str):
        span.update_name(f"{scope.get('method', 'GET')} {route}")
        ended["http.route"] = route
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
        ended["error.type"] = str(status)
    labels = labels_var.get()
    if labels is not None:
        for key, value in (
            ("loragate.tenant", labels.tenant),
            ("gen_ai.request.model", labels.model),
            ("loragate.adapter", labels.adapter),
        ):
            if value is not None:
                ended[key] = value
    span.set_attributes(ended)
    span.end()
