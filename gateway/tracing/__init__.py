"""OpenTelemetry traces of the gateway (docs/tracing.md).

Built once at start-up from the ``tracing`` settings and the standard ``OTEL_*``
variables (``Tracing.from_settings``); off when neither names a collector, and then
nothing here runs per request (no middleware, no tracer provider, no spans).

    TraceMiddleware   the request's server span; a caller's W3C ``traceparent`` continued
    RequestTrace      one generation's GenAI span and its steps (admission, queue,
                      retrieval, render, engine with its first token)
    replica_call      the client span of one call to a vLLM replica, and the
                      ``traceparent`` header that carries it there

Spans are recorded as plain objects while the request runs and handed to the
OpenTelemetry SDK's span processor as each ends (``gateway.tracing.record`` says why).
Each is started with an explicit parent rather than made current across ``yield``: the
pipeline and the engines are async generators whose steps may run in different tasks,
where a context variable set in one step could not be reset in the next.
"""

from gateway.tracing.http import TraceMiddleware
from gateway.tracing.provider import Tracing
from gateway.tracing.replica import ReplicaCall, replica_call
from gateway.tracing.request import NO_TRACE, RequestTrace, StepSpan, Trace

__all__ = [
    "NO_TRACE",
    "ReplicaCall",
    "RequestTrace",
    "StepSpan",
    "Trace",
    "TraceMiddleware",
    "Tracing",
    "replica_call",
]
