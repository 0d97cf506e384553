"""``Tracing``: the gateway's tracer, built once at start-up (or nothing, when off)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, get_current_span

from gateway.settings import TracingSettings
from gateway.tracing.record import SpanRecord, SpanSink, TracedRun, Unrecorded, current_span
from gateway.tracing.request import NO_TRACE, RequestTrace, Trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

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
    """Where traced requests' spans go, how traces are sampled, and whether prompts and
    outputs are recorded.

    ``sink`` None: tracing is off; ``request`` then hands out ``NO_TRACE`` (whose
    methods do nothing and return what they were given) and the app adds no middleware.
    ``sampler`` None with a sink: the SDK's default, every trace a caller did not mark
    as sampled out.
    """

    def __init__(
        self,
        sink: SpanSink | None = None,
        *,
        sampler: Sampler | None = None,
        capture_content: bool = False,
        provider: TracerProvider | None = None,
    ) -> None:
        self.sink = sink
        if sink is not None and sampler is None:
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

            sampler = ParentBased(ALWAYS_ON)
        self.sampler = sampler
        self.capture_content = capture_content
        self._provider = provider

    @property
    def enabled(self) -> bool:
        return self.sink is not None

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
        as it ends (``batch=False``: tests with the SDK's in-memory exporter). The
        provider supplies the resource (``OTEL_RESOURCE_ATTRIBUTES`` merged), the
        sampler, the id generator and the processor's shutdown; spans are recorded
        by ``gateway.tracing.record`` and reach the processor as they end.
        ``sample_ratio`` None: the SDK's sampler from ``OTEL_TRACES_SAMPLER``."""
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        resource = Resource.create({SERVICE_NAME: service_name or DEFAULT_SERVICE_NAME})
        sampler = None if sample_ratio is None else ParentBased(TraceIdRatioBased(sample_ratio))
        provider = TracerProvider(resource=resource, sampler=sampler)
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
        sink = SpanSink(
            processor, provider.resource, InstrumentationScope(SCOPE), provider.id_generator
        )
        return cls(
            sink, sampler=provider.sampler, capture_content=capture_content, provider=provider
        )

    def start(
        self, name: str, kind: SpanKind, attributes: dict[str, object], caller: Context | None
    ) -> SpanRecord | None:
        """The root span of a trace in this process, under ``caller``'s span when the
        request carried one (W3C context, as extracted); None when off or sampled out.
        The sampler decides here, once for the whole trace."""
        if self.sink is None or self.sampler is None:  # off
            return None
        remote = get_current_span(caller).get_span_context() if caller is not None else None
        if remote is not None and remote.is_valid:
            trace_id, parent_id, state = remote.trace_id, remote.span_id, remote.trace_state
        else:
            trace_id, parent_id, state = self.sink.ids.generate_trace_id(), None, None
        decision = self.sampler.should_sample(caller, trace_id, name, kind)
        if not decision.decision.is_sampled():
            return None
        run = TracedRun(self.sink, trace_id, decision.trace_state or state, parent_id)
        return run.start(name, None, kind, attributes)

    def request(self, tenant: str, operation: str, model: str | None) -> Trace:
        """The trace of one generation request (``NO_TRACE`` when off or sampled out):
        under the request's server span, or a trace of its own outside one."""
        if self.sink is None:
            return NO_TRACE
        parent = current_span.get()
        if isinstance(parent, Unrecorded):  # the request's trace is sampled out
            return NO_TRACE
        trace = RequestTrace(self, tenant, operation, model, parent)
        if trace.span is None:  # sampled out: no child spans either
            return NO_TRACE
        return trace

    def shutdown(self) -> None:
        """Export what is left and stop the exporter (blocking: at most its timeout)."""
        if self._provider is not None:
            self._provider.shutdown()
