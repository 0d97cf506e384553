"""Spans recorded as plain fields while a request runs, handed to the SDK when they end.

    SpanRecord    one span: ids, start and end times, attributes, status, events
    TracedRun     one sampled trace in this process: its id, the caller's trace state,
                  where ended spans go; starts child spans and ends them
    SpanSink      turns an ended span into the SDK's ``ReadableSpan`` for the span
                  processor (the batch processor exports from its worker thread)
    current_span  the request's innermost span (a ``ContextVar``): the parent of the
                  next span started in this task, ``UNSAMPLED`` when the request's
                  trace is not recorded, None outside a traced request

Why not the SDK's ``Tracer``: its ``start_span`` and ``end`` run the sampler, copy and
clean every attribute into a locked bounded mapping, look up the current context and
call the processors, for every span; a request's seven spans cost about 0.2 ms there
(``loadtests.bench_tracing``). Here a span is a slotted object filled in as the request
goes: the trace is sampled once (by the SDK's sampler, ``OTEL_TRACES_SAMPLER``
included), ids come from the SDK's id generator, and each span becomes a
``ReadableSpan`` with its explicit start and end times when it ends, which is what
the SDK's processors and exporters consume.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, TraceFlags, TraceState

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSET = Status()


class SpanRecord:
    """One span as the request goes. Concurrency rule: filled in by the request's own
    steps only; ``TracedRun.end`` hands it on once, after which it is not touched."""

    __slots__ = (
        "attributes",
        "end",
        "events",
        "kind",
        "name",
        "parent_id",
        "run",
        "span_id",
        "start",
        "status",
    )

    def __init__(
        self,
        run: TracedRun,
        name: str,
        span_id: int,
        parent_id: int | None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.run = run
        self.name = name
        self.span_id = span_id
        self.parent_id = parent_id
        self.kind = kind
        self.attributes = attributes if attributes is not None else {}
        self.status = UNSET
        self.events: list[Event] | None = None
        self.start = time.time_ns()
        self.end = 0

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = tuple(value) if isinstance(value, list) else value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.attributes[key] = tuple(value) if isinstance(value, list) else value

    def set_status(self, status: Status) -> None:
        self.status = status

    def add_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        if self.events is None:
            self.events = []
        self.events.append(Event(name, dict(attributes), time.time_ns()))


class Unrecorded:
    """A span that records nothing: tracing off, or the trace sampled out."""

    __slots__ = ()

    def is_recording(self) -> bool:
        return False

    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        return None

    def set_status(self, status: Status) -> None:
        return None

    def add_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        return None


UNSAMPLED = Unrecorded()
"""``current_span`` of a request whose trace is sampled out: its steps record nothing."""

current_span: ContextVar[SpanRecord | Unrecorded | None] = ContextVar(
    "loragate_current_span", default=None
)


class SpanSink:
    """Where ended spans go: ``processor.on_end`` with a ``ReadableSpan`` of this
    process's resource and the ``loragate`` scope. Thread-safe as the processor is."""

    def __init__(
        self,
        processor: SpanProcessor,
        resource: Resource,
        scope: InstrumentationScope,
        ids: IdGenerator,
    ) -> None:
        self.processor = processor
        self.resource = resource
        self.scope = scope
        self.ids = ids

    def emit(self, run: TracedRun, span: SpanRecord) -> None:
        context = SpanContext(run.trace_id, span.span_id, False, SAMPLED, run.trace_state)
        parent = None
        if span.parent_id is not None:
            remote = span.parent_id == run.remote_parent
            parent = SpanContext(run.trace_id, span.parent_id, remote, SAMPLED, run.trace_state)
        events: Sequence[Event] = span.events or ()
        self.processor.on_end(
            ReadableSpan(
                span.name,
                context,
                parent,
                self.resource,
                span.attributes,
                events,
                kind=span.kind,
                status=span.status,
                start_time=span.start,
                end_time=span.end,
                instrumentation_scope=self.scope,
            )
        )


class TracedRun:
    """One sampled trace as this process sees it (a request's server span and what runs
    under it). ``remote_parent``: the caller's span id when the trace came in with a
    ``traceparent``."""

    __slots__ = ("remote_parent", "sink", "trace_id", "trace_state")

    def __init__(
        self,
        sink: SpanSink,
        trace_id: int,
        trace_state: TraceState | None = None,
        remote_parent: int | None = None,
    ) -> None:
        self.sink = sink
        self.trace_id = trace_id
        self.trace_state = trace_state
        self.remote_parent = remote_parent

    def start(
        self,
        name: str,
        parent: SpanRecord | None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: dict[str, Any] | None = None,
    ) -> SpanRecord:
        """A span under ``parent`` (None: under the caller's span, or the trace's root)."""
        parent_id = parent.span_id if parent is not None else self.remote_parent
        span_id = self.sink.ids.generate_span_id()
        return SpanRecord(self, name, span_id, parent_id, kind, attributes)

    def end(self, span: SpanRecord) -> None:
        span.end = time.time_ns()
        self.sink.emit(self, span)

    def traceparent(self, span: SpanRecord) -> dict[str, str]:
        """The W3C headers naming ``span`` as the parent of a call it makes."""
        headers = {"traceparent": f"00-{self.trace_id:032x}-{span.span_id:016x}-01"}
        if self.trace_state:
            headers["tracestate"] = self.trace_state.to_header()
        return headers
