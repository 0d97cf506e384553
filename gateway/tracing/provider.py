"""``Tracing``: the gateway's tracer, built once at start-up (or nothing, when off)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry.trace import Tracer

from gateway.settings import TracingSettings
from gateway.tracing.request import NO_TRACE, RequestTrace, Trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

SCOPE = "loragate"
DEFAULT_SERVICE_NAME = "loragate"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SUPPORTED_PROTOCOL = "http/protobuf"


def tracing_wanted(settings: TracingSettings, environ: Mapping[str, str]) -> bool:
    """``enabled`` when the settings say; else on when a collector is named (here or in
    the OTLP variables), unless ``OTEL_SDK_DISABLED`` or ``OTEL_TRACES_EXPORTER=none``."""
    if settings.enabled is not None:
        return settings.enabled
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return settings.endpoint is not None or any(environ.get(v) for v in ENDPOINT_VARIABLES)


def traces_url(base: str) -> str:
    """OTLP/HTTP's signal path on a collector's base URL (as the SDK does for
    ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    return f"{base.rstrip('/')}/v1/traces"


class Tracing:
    """The tracer every traced step uses, and whether prompts and outputs are recorded.

    ``tracer`` None: tracing is off; ``request`` then hands out ``NO_TRACE`` (whose
    methods do nothing and return what they were given) and the app adds no middleware.
    """

    def __init__(
        self,
        tracer: Tracer | None = None,
        *,
        capture_content: bool = False,
        provider: TracerProvider | None = None,
    ) -> None:
        self.tracer = tracer
        self.capture_content = capture_content
        self._provider = provider

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def from_settings(
        cls, settings: TracingSettings, environ: Mapping[str, str] | None = None
    ) -> Tracing:
        """Spans exported in batches over OTLP/HTTP (protobuf) to the configured
        collector; off when ``tracing_wanted`` says so. Raises ``ValueError`` for an
        OTLP protocol other than ``http/protobuf``."""
        env = os.environ if environ is None else environ
        if not tracing_wanted(settings, env):
            return cls()
        protocol = next((env[v] for v in PROTOCOL_VARIABLES if env.get(v)), SUPPORTED_PROTOCOL)
        if protocol.strip() != SUPPORTED_PROTOCOL:
            raise ValueError(
                f"OTLP protocol {protocol!r} is not supported: loragate exports traces "
                f"over {SUPPORTED_PROTOCOL} (unset the variable or set it to that)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # endpoint None: the exporter reads the OTEL_EXPORTER_OTLP_* variables itself
        # (endpoint, headers, timeout, compression, certificates).
        endpoint = traces_url(settings.endpoint) if settings.endpoint else None
        return cls.exporting(
            OTLPSpanExporter(endpoint=endpoint),
            service_name=settings.service_name or env.get("OTEL_SERVICE_NAME"),
            sample_ratio=settings.sample_ratio,
            capture_content=settings.capture_content,
            batch=True,
        )

    @classmethod
    def exporting(
        cls,
        exporter: SpanExporter,
        *,
        service_name: str | None = None,
        sample_ratio: float | None = None,
        capture_content: bool = False,
        batch: bool = True,
    ) -> Tracing:
        """An SDK tracer provider of its own (never the process-wide one) sending to
        ``exporter``: in batches from a worker thread (``OTEL_BSP_*``), or each span
        as it ends (``batch=False``: tests with the SDK's in-memory exporter).
        ``sample_ratio`` None: the SDK's sampler from ``OTEL_TRACES_SAMPLER``."""
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        resource = Resource.create({SERVICE_NAME: service_name or DEFAULT_SERVICE_NAME})
        sampler = None if sample_ratio is None else ParentBased(TraceIdRatioBased(sample_ratio))
        provider = TracerProvider(resource=resource, sampler=sampler)
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        tracer = provider.get_tracer(SCOPE)
        return cls(tracer, capture_content=capture_content, provider=provider)

    def request(self, tenant: str, operation: str, model: str | None) -> Trace:
        """The trace of one generation request (``NO_TRACE`` when off or sampled out)."""
        if self.tracer is None:
            return NO_TRACE
        trace = RequestTrace(self.tracer, tenant, operation, model, self.capture_content)
        if not trace.span.is_recording():  # sampled out: no child spans either
            trace.span.end()
            return NO_TRACE
        return trace

    def shutdown(self) -> None:
        """Export what is left and stop the exporter (blocking: at most its timeout)."""
        if self._provider is not None:
            self._provider.shutdown()
