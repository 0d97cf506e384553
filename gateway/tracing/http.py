"""``TraceMiddleware``: one server span per HTTP request, continuing a caller's trace."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.request_context import labels_var, request_id_var
from gateway.tracing.provider import Tracing
from gateway.tracing.record import UNSAMPLED, SpanRecord, current_span

W3C = TraceContextTextMapPropagator()
"""W3C Trace Context (``traceparent``, ``tracestate``): what callers and vLLM speak."""

TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
UNTRACED = frozenset({"/metrics", "/health", "/ready"})
"""Probes and scrapes: many, and nothing to follow."""


class TraceMiddleware:
    """Pure ASGI middleware (streams pass through untouched), added only when tracing
    is on. The span is current in the request's task for the whole request, the
    streamed body included (``current_span``), so the pipeline's spans are its
    children; it is named ``{method} {route}`` once routing has matched, and carries
    the tenant, model and adapter the services found (``RequestLabels``). The sampler
    decides here for the whole request; a request sampled out records nothing."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        assert tracing.enabled, "add the middleware only when tracing is on"
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in UNTRACED:
            await self.app(scope, receive, send)
            return
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in TRACE_HEADERS
        }
        method = scope.get("method", "GET")
        span = self.tracing.start(
            method,
            SpanKind.SERVER,
            {
                "http.request.method": method,
                "url.path": scope.get("path", ""),
                "url.scheme": scope.get("scheme", "http"),
                "loragate.request_id": request_id_var.get(),
            },
            W3C.extract(carrier) if carrier else None,
        )
        if span is None:  # sampled out
            token = current_span.set(UNSAMPLED)
            try:
                await self.app(scope, receive, send)
            finally:
                current_span.reset(token)
            return
        status = 500

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = current_span.set(span)
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            span.attributes["error.type"] = type(exc).__qualname__
            raise
        finally:
            current_span.reset(token)
            _finish(span, scope, status)


def _finish(span: SpanRecord, scope: Scope, status: int) -> None:
    attributes = span.attributes
    attributes["http.response.status_code"] = status
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str):
        span.name = f"{scope.get('method', 'GET')} {route}"
        attributes["http.route"] = route
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
        attributes["error.type"] = str(status)
    labels = labels_var.get()
    if labels is not None:
        for key, value in (
            ("loragate.tenant", labels.tenant),
            ("gen_ai.request.model", labels.model),
            ("loragate.adapter", labels.adapter),
        ):
            if value is not None:
                attributes[key] = value
    span.run.end(span)
