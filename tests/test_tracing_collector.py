"""End to end: the OpenAI SDK calls a gateway in remote mode (real vLLM replicas) with its
own ``traceparent``; the gateway, configured by the standard ``OTEL_*`` variables alone,
exports the request's spans over OTLP/HTTP to a real collector (rotel), which prints
what it received."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from gateway.app import create_app
from gateway.settings import Settings
from loadtests.replica_process import ReplicaProcess
from tests.support.engine_fixtures import free_port, start_gateway, stop_gateway
from tests.support.modelkit import tiny_llama_dir
from tests.support.otel_collector import Collector, ReceivedSpan, rotel_binary

pytestmark = pytest.mark.engine

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    binary = rotel_binary()
    if binary is None:
        pytest.skip("rotel (an OpenTelemetry collector, in the dev extra) is not installed")
    log = tmp_path_factory.mktemp("collector") / "rotel.log"
    running = Collector(binary, log, free_port(), free_port())
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def test_a_request_reaches_the_collector_as_one_trace(
    collector: Collector,
    replicas: list[ReplicaProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "loragate-under-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # milliseconds
    settings = Settings.load(
        None,
        model={"path": tiny_llama_dir(), "name": "tiny-llama"},
        registry={"data_dir": tmp_path / "registry"},
        engine={"kind": "remote", "replicas": [r.url for r in replicas], "max_lora_rank": 8},
        server={"host": "127.0.0.1", "port": free_port()},
    )
    gateway = start_gateway(settings, app=create_app(settings), ready_timeout=120)
    try:
        client = OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0)
        stream = client.chat.completions.create(
            model="tiny-llama",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        chunks = list(stream)
        usage = chunks[-1].usage
        assert usage is not None
        client.close()
    finally:
        stop_gateway(gateway)  # the app's shutdown exports what is left

    names = {"POST /v1/chat/completions", "chat tiny-llama", "loragate.engine"}
    spans = [s for s in collector.wait_for(names) if s.trace_id == CALLER_TRACE]
    server = one(spans, "POST /v1/chat/completions")
    assert server.kind == "SPAN_KIND_SERVER" and server.parent_id == CALLER_SPAN
    assert server.resource["service.name"] == "loragate-under-test"
    assert server.attributes["http.response.status_code"] == 200
    operation = one(spans, "chat tiny-llama")
    assert operation.parent_id == server.span_id
    assert operation.attributes["gen_ai.operation.name"] == "chat"
    assert operation.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert operation.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert operation.attributes["gen_ai.request.max_tokens"] == 6
    for step in ("loragate.admission", "loragate.render", "loragate.queue", "loragate.engine"):
        assert one(spans, step).parent_id == operation.span_id, step
    engine = one(spans, "loragate.engine")
    assert engine.attributes["gen_ai.server.time_to_first_token"] > 0
    (call,) = [s for s in spans if s.kind == "SPAN_KIND_CLIENT"]
    assert call.name.startswith("text_completion ")
    assert call.parent_id == engine.span_id
    assert f"{call.attributes['server.address']}:{call.attributes['server.port']}" in {
        r.url.removeprefix("http://") for r in replicas
    }
    # Nothing of the conversation unless tracing.capture_content is on.
    assert not any("Say hello" in str(v) for s in spans for v in s.attributes.values())
