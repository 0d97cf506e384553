"""Traces (``gateway.tracing``) read back from the OpenTelemetry SDK's in-memory exporter.

The app runs over ASGI with the fake engine (or a remote engine over a scripted replica
that records the headers it receives); every test builds its own tracer provider.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.app import create_app
from gateway.engine.interface import Engine
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.pipeline.chat import ChatEndpoint
from gateway.protocol.chat import ChatCompletionRequest
from gateway.settings import Settings, TracingSettings
from gateway.settings.keys import generate_key
from gateway.tracing import NO_TRACE, TraceMiddleware, Tracing
from gateway.tracing.request import CONTENT_EVENT
from tests.conftest import FakeKit, fake_settings
from tests.support.fakes import FakeEngine
from tests.support.hostile_replica import BASE, HostileReplica, remote_engine

CALLER_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01"
ACME = generate_key()
STEPS = ("loragate.admission", "loragate.render", "loragate.queue", "loragate.engine")


@asynccontextmanager
async def traced_gateway(
    settings: Settings, renderer: PromptRenderer, tracing: Tracing, engine: Engine | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    engine = engine or FakeEngine()
    app = create_app(settings, engine_factory=lambda _: engine, renderer=renderer, tracing=tracing)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def recorded_text(spans: Sequence[ReadableSpan]) -> str:
    """Every attribute and event attribute value of ``spans``, as one string."""
    values: list[Any] = []
    for s in spans:
        values += list((s.attributes or {}).values())
        for e in s.events:
            values += list((e.attributes or {}).values())
    return json.dumps([v if isinstance(v, str | int | float) else list(v) for v in values])


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def settings(fake_kit: FakeKit, tmp_path: Path) -> Settings:
    return fake_settings(fake_kit, tmp_path / "registry")


async def test_a_chat_request_is_one_trace_under_the_callers_span(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, exporter: InMemorySpanExporter
) -> None:
    acme = {"keys": [{"id": ACME.key_id, "hash": ACME.hash}], "models": ["*"]}
    settings = fake_settings(fake_kit, tmp_path / "registry", tenants={"acme": acme})
    tracing = Tracing.exporting(exporter, batch=False)
    async with traced_gateway(settings, renderer, tracing) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={
                "model": "pirate",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5,
            },
            headers={"traceparent": TRACEPARENT, "Authorization": f"Bearer {ACME.key}"},
        )
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    spans = by_name(exporter.get_finished_spans())
    server = spans["POST /v1/chat/completions"]
    assert server.kind == SpanKind.SERVER
    assert server.context is not None and server.context.trace_id == CALLER_TRACE
    assert parent_of(server) == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/v1/chat/completions"
    assert server.attributes["loragate.adapter"] == "pirate"

    operation = spans["chat pirate"]
    assert parent_of(operation) == span_id(server)
    attributes = dict(operation.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "pirate"
    assert attributes["gen_ai.request.max_tokens"] == 5
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"] == 5
    assert attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert attributes["gen_ai.response.id"] == r.json()["id"]
    assert attributes["loragate.adapter"] == "pirate"
    assert attributes["loragate.tenant"] == "acme"
    assert (server.attributes or {})["loragate.tenant"] == "acme"
    for step in STEPS:
        assert parent_of(spans[step]) == span_id(operation), step
        assert spans[step].context is not None
        assert spans[step].context.trace_id == CALLER_TRACE
    engine = spans["loragate.engine"]
    ttft = (engine.attributes or {})["gen_ai.server.time_to_first_token"]
    assert isinstance(ttft, float) and 0 <= ttft < 5
    # Steps in the order the pipeline takes them.
    admission, render, queue = (spans[s] for s in STEPS[:3])
    assert admission.end_time is not None and render.start_time is not None
    assert admission.end_time <= render.start_time
    assert queue.end_time is not None and engine.start_time is not None
    assert queue.end_time <= engine.start_time
    assert not any(s.status.status_code == StatusCode.ERROR for s in spans.values())


@pytest.mark.parametrize("capture", [False, True])
async def test_prompts_and_outputs_are_recorded_only_when_turned_on(
    settings: Settings, renderer: PromptRenderer, exporter: InMemorySpanExporter, capture: bool
) -> None:
    tracing = Tracing.exporting(exporter, batch=False, capture_content=capture)
    secret = "zebra-4711 is the password"
    async with traced_gateway(settings, renderer, tracing) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "robot", "messages": [{"role": "user", "content": secret}]},
        )
    assert r.status_code == 200, r.text
    reply = r.json()["choices"][0]["message"]["content"]
    spans = exporter.get_finished_spans()
    text = recorded_text(spans)
    operation = by_name(spans)["chat robot"]
    details = [e for e in operation.events if e.name == CONTENT_EVENT]
    if not capture:
        assert "zebra-4711" not in text and reply.split()[0] not in text
        assert details == []
        return
    (event,) = details
    assert event.attributes is not None
    inputs = json.loads(str(event.attributes["gen_ai.input.messages"]))
    outputs = json.loads(str(event.attributes["gen_ai.output.messages"]))
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": secret}]}]
    assert outputs[0]["role"] == "assistant"
    assert outputs[0]["parts"][0]["content"] == reply
    assert outputs[0]["finish_reason"] in ("stop", "length")


async def test_a_streamed_completion_ends_every_span(
    settings: Settings, renderer: PromptRenderer, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing.exporting(exporter, batch=False)
    async with traced_gateway(settings, renderer, tracing) as client:
        r = await client.post(
            "/v1/completions",
            json={"model": "tiny-base", "prompt": ["one", "two"], "max_tokens": 3, "stream": True},
        )
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    spans = by_name(exporter.get_finished_spans())
    operation = spans["text_completion tiny-base"]
    attributes = operation.attributes or {}
    assert attributes["gen_ai.operation.name"] == "text_completion"
    assert attributes["gen_ai.usage.output_tokens"] == 6  # two prompts, three tokens each
    assert attributes["gen_ai.response.finish_reasons"] == ("length", "length")
    assert "loragate.adapter" not in attributes
    assert set(STEPS) <= set(spans)


async def test_a_refused_request_names_its_error_without_failing_the_span(
    settings: Settings, renderer: PromptRenderer, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing.exporting(exporter, batch=False)
    async with traced_gateway(settings, renderer, tracing) as client:
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 404
    spans = by_name(exporter.get_finished_spans())
    operation = spans["chat no-such-model"]
    assert (operation.attributes or {})["error.type"] == "model_not_found"
    assert operation.status.status_code == StatusCode.UNSET  # the client's fault, not ours
    assert (spans["POST /v1/chat/completions"].attributes or {})["http.response.status_code"] == 404
    assert "loragate.engine" not in spans


async def test_sampling_follows_the_callers_flag(
    settings: Settings, renderer: PromptRenderer, exporter: InMemorySpanExporter
) -> None:
    tracing = Tracing.exporting(exporter, batch=False, sample_ratio=0.0)
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}]}
    async with traced_gateway(settings, renderer, tracing) as client:
        assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        assert exporter.get_finished_spans() == ()  # a new trace at ratio 0: dropped
        headers = {"traceparent": TRACEPARENT}  # sampled by the caller: kept
        assert (await client.post("/v1/chat/completions", json=body, headers=headers)).is_success
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.context} == {
        CALLER_TRACE
    }


async def test_the_replica_receives_the_callers_trace_in_traceparent(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, exporter: InMemorySpanExporter
) -> None:
    settings = fake_settings(fake_kit, tmp_path / "registry", adapters=[])
    replica = await HostileReplica.start()
    try:
        for tracing in (Tracing.exporting(exporter, batch=False), Tracing()):
            engine = await remote_engine(replica)
            async with traced_gateway(settings, renderer, tracing, engine) as client:
                r = await client.post(
                    "/v1/chat/completions",
                    json={"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"},
                )
                assert r.status_code == 200, r.text
    finally:
        await replica.stop()
    traced, untraced = replica.headers
    assert "traceparent" not in untraced  # tracing off: nothing passed on
    assert traced["tracestate"] == "vendor=abc"  # the caller's, passed on as it came
    spans = by_name(exporter.get_finished_spans())
    call = spans[f"text_completion {BASE}"]
    assert call.kind == SpanKind.CLIENT
    assert parent_of(call) == span_id(spans["loragate.engine"])
    assert traced["traceparent"] == f"00-{CALLER_TRACE:032x}-{span_id(call):016x}-01"
    attributes = call.attributes or {}
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == int(replica.url.rsplit(":", 1)[1])
    assert attributes["gen_ai.request.model"] == BASE


def test_off_without_an_endpoint_and_on_with_the_otel_variables(
    settings: Settings, renderer: PromptRenderer
) -> None:
    off = Tracing.from_settings(TracingSettings(), environ={})
    assert not off.enabled and off.request("t", "chat", "m") is NO_TRACE
    app = create_app(settings, engine_factory=lambda _: FakeEngine(), renderer=renderer)
    assert TraceMiddleware not in [m.cls for m in app.user_middleware]

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    on = Tracing.from_settings(TracingSettings(), environ=env)
    assert on.enabled
    on.shutdown()
    assert not Tracing.from_settings(
        TracingSettings(), {**env, "OTEL_SDK_DISABLED": "true"}
    ).enabled
    assert not Tracing.from_settings(
        TracingSettings(), {**env, "OTEL_TRACES_EXPORTER": "none"}
    ).enabled
    assert not Tracing.from_settings(TracingSettings(enabled=False), env).enabled
    configured = Tracing.from_settings(TracingSettings(endpoint="http://127.0.0.1:4318"), {})
    assert configured.enabled
    configured.shutdown()
    with pytest.raises(ValueError, match="http/protobuf"):
        Tracing.from_settings(TracingSettings(), {**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


async def test_no_trace_hands_back_what_it_is_given() -> None:
    async def outputs() -> AsyncIterator[tuple[int, Any]]:
        yield 0, None

    stream = outputs()
    manager = NO_TRACE.step("x")
    assert NO_TRACE.engine(stream) is stream  # type: ignore[arg-type]
    entry = object()
    assert NO_TRACE.entry("x", entry) is entry  # type: ignore[arg-type]
    with manager as span:
        assert not span.is_recording()
    await stream.aclose()


async def test_a_request_the_client_leaves_ends_every_span_as_cancelled(
    settings: Settings, renderer: PromptRenderer, exporter: InMemorySpanExporter
) -> None:
    engine = FakeEngine(reply_words=50)
    engine.token_delay = 0.01
    tracing = Tracing.exporting(exporter, batch=False)
    app = create_app(settings, engine_factory=lambda _: engine, renderer=renderer, tracing=tracing)
    async with app.router.lifespan_context(app):
        state = app.state.gateway
        caller = state.gatekeeper.authenticate(None)
        request = ChatCompletionRequest.model_validate(
            {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        )
        started = await state.pipeline.start(caller, ChatEndpoint(request))
        outputs = started.outputs()
        await anext(outputs)
        await outputs.aclose()  # the client left after the first output
        for _ in range(200):  # the engine's stream is finalized by the loop
            if engine.aborted:
                break
            await asyncio.sleep(0.01)
        assert engine.aborted
    spans = by_name(exporter.get_finished_spans())
    operation = spans["chat tiny-base"]
    assert (operation.attributes or {})["error.type"] == "cancelled"
    produced = (operation.attributes or {})["gen_ai.usage.output_tokens"]
    assert isinstance(produced, int) and 0 < produced < 50
    assert set(STEPS) <= set(spans)
    assert all(s.status.status_code != StatusCode.ERROR for s in spans.values())
