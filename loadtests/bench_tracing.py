"""What OpenTelemetry tracing costs the gateway, in CPU time per request. Prints a table.

    python -m loadtests.bench_tracing [--requests 1000] [--rounds 3]

One process holds one gateway app per variant (remote mode, in front of
``loadtests.instant_backend`` in a subprocess, with a tenant, a key, a policy and
metrics as ``bench_overhead`` configures it) and their clients (httpx over ASGI, no
sockets). The variants take turns every 50 requests, each turn timed with the process's
CPU clock (which includes the span exporters' worker threads), so a burst of load from
other programs falls on all of them alike. Variants:

- ``off``: no tracing (no ``OTEL_*``, no ``tracing:``);
- ``on, dropped``: every request traced, spans handed to an exporter that drops them
  (the cost of making spans);
- ``on``: every request traced, spans exported over OTLP/HTTP to a local collector
  (rotel, the dev extra's, which drops what it receives);
- ``1 in 10``: as ``on``, with ``sample_ratio: 0.1``.

*added* is a variant's median (over rounds) minus ``off``'s; *paired* is the median,
over the turns, of a variant's turn p50 minus ``off``'s p50 in the same cycle of turns
(load that changes between cycles falls on both sides of each difference).
``bench_overhead --tracing`` measures the same over real sockets, where a loaded
machine's noise dominates.

A first, smaller table times the tracing calls of one remote-mode request alone (server
span, operation, admission, render, queue, engine with one replica call, nine outputs;
no gateway around them), the span processor doing nothing with the ended spans or
queueing them for a batch exporter that drops them: the request path's share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path

import httpx
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Tracer, set_span_in_context
from opentelemetry.util.types import AnyValue

from gateway.app import create_app
from gateway.engine.interface import ChoiceOutput, GenerationOutput
from gateway.settings import Settings
from gateway.tracing import Tracing, replica_call
from gateway.tracing.record import SpanSink, current_span
from loadtests.bench_overhead import HOST, chat_body, loragate_config, started
from loadtests.bench_serving import wait_ready
from loadtests.instant_backend import MODEL
from loadtests.target import free_port


class DroppingExporter(SpanExporter):
    """Takes every batch and keeps nothing: the span-making cost without the export's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Entered:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


TOKENS = [GenerationOutput("bench", [ChoiceOutput(0, "w", (i,))]) for i in range(8)] + [
    GenerationOutput("bench", [ChoiceOutput(0, "w", (8,), finish_reason="length")])
]
"""Nine outputs of one token each, the last one finished."""


async def _outputs() -> AsyncGenerator[tuple[int, GenerationOutput], None]:
    for i, output in enumerate(TOKENS):
        if i == 0:
            async with replica_call("http://127.0.0.1:8000", MODEL, 12):
                pass
        yield 0, output


async def _traced_calls(tracing: Tracing) -> None:
    """One remote-mode request's tracing calls, as the middleware and pipeline make them."""
    span = tracing.start("POST", SpanKind.SERVER, {"http.request.method": "POST"}, None)
    assert span is not None
    token = current_span.set(span)
    trace = tracing.request("bench", "chat", MODEL)
    async with trace, trace.entry("loragate.admission", _Entered()):
        with trace.step("loragate.render"):
            pass
        async with trace.entry("loragate.queue", _Entered()):
            async for _ in trace.engine(_outputs()):
                pass
    current_span.reset(token)
    span.attributes["http.response.status_code"] = 200
    span.run.end(span)


async def _sdk_calls(tracer: Tracer) -> None:
    """The same spans, attributes and context switches through the SDK's span API."""
    server = tracer.start_span("POST", kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES)
    token = otel_context.attach(set_span_in_context(server))
    operation = tracer.start_span(f"chat {MODEL}", attributes=dict(OPERATION_ATTRIBUTES))
    under = set_span_in_context(operation)
    for name in ("loragate.admission", "loragate.render", "loragate.queue"):
        tracer.start_span(name, context=under).end()
    engine = tracer.start_span("loragate.engine", context=under)
    running = set_span_in_context(engine)
    for i in range(len(TOKENS)):
        step = otel_context.attach(running)
        if i == 0:
            call = tracer.start_span(f"text_completion {MODEL}", kind=SpanKind.CLIENT)
            call.set_attributes(CALL_ATTRIBUTES)
            call.end()
        otel_context.detach(step)
    engine.set_attribute("gen_ai.server.time_to_first_token", 0.001)
    engine.end()
    operation.set_attributes(ENDED_ATTRIBUTES)
    operation.end()
    otel_context.detach(token)
    server.set_attribute("http.response.status_code", 200)
    server.end()


SERVER_ATTRIBUTES: dict[str, AnyValue] = {"http.request.method": "POST"}
OPERATION_ATTRIBUTES: dict[str, AnyValue] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "vllm",
    "loragate.tenant": "bench",
    "loragate.endpoint": "chat",
    "gen_ai.request.model": MODEL,
}
ENDED_ATTRIBUTES: dict[str, AnyValue] = {
    "gen_ai.response.id": "chatcmpl-bench",
    "gen_ai.request.max_tokens": 8,
    "gen_ai.request.temperature": 1.0,
    "gen_ai.request.top_p": 1.0,
    "gen_ai.usage.input_tokens": 12,
    "gen_ai.response.model": MODEL,
    "gen_ai.usage.output_tokens": 9,
    "gen_ai.response.finish_reasons": ("length",),
}
CALL_ATTRIBUTES: dict[str, AnyValue] = {
    "gen_ai.operation.name": "text_completion",
    "gen_ai.provider.name": "vllm",
    "gen_ai.request.model": MODEL,
    "gen_ai.usage.input_tokens": 12,
    "server.address": "127.0.0.1",
    "server.port": 8000,
    "http.request.method": "POST",
    "url.full": "http://127.0.0.1:8000/v1/completions",
}


def calls_cpu_us(calls: Callable[[], Awaitable[None]], requests: int = 2000) -> float:
    """CPU microseconds per request of ``calls`` (best of five runs)."""

    async def run() -> float:
        for _ in range(200):
            await calls()
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for _ in range(requests):
                await calls()
            best = min(best, (time.process_time() - started) / requests * 1e6)
        return best

    return asyncio.run(run())


def print_calls_table() -> None:
    queued = Tracing.exporting(DroppingExporter())
    assert queued.sink is not None
    sink = queued.sink
    ignored = Tracing(
        SpanSink(SpanProcessor(), sink.resource, sink.scope, sink.ids), sampler=queued.sampler
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=sink.resource)
    provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    tracer = provider.get_tracer("loragate")
    rows: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("recorded; ReadableSpans made, processor does nothing", lambda: _traced_calls(ignored)),
        ("recorded; queued by the batch processor, exporter drops", lambda: _traced_calls(queued)),
        ("the SDK's span API; batch processor, exporter drops", lambda: _sdk_calls(tracer)),
    ]
    print("\nTracing calls of one remote-mode request alone (7 spans), CPU µs, best of 5:\n")
    print("| spans | CPU µs/request |")
    print("| --- | ---: |")
    for name, calls in rows:
        print(f"| {name} | {calls_cpu_us(calls):.1f} |")
    queued.shutdown()
    provider.shutdown()


BATCH = 50
"""Requests per turn: the variants take turns every ``BATCH`` requests, so a burst of
load from other programs falls on all of them alike."""


async def measure(
    configs: dict[str, tuple[Settings, str]],
    variants: dict[str, Callable[[], Tracing]],
    requests: int,
    stream: bool,
) -> dict[str, tuple[float, list[float]]]:
    """Per variant: CPU ms per request, and each request's wall-clock ms. Every variant's
    app (its own settings, data folder and key) is up at once; after 100 warm-up requests
    each, they take turns."""
    body = chat_body(stream, 8)
    cpu = dict.fromkeys(variants, 0.0)
    walls: dict[str, list[float]] = {name: [] for name in variants}
    async with AsyncExitStack() as stack:
        clients = {}
        for name, make in variants.items():
            tracing = make()
            stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
            settings, key = configs[name]
            app = create_app(settings, tracing=tracing)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(
                transport=transport,
                base_url=f"http://{HOST}",
                headers={"Authorization": f"Bearer {key}"},
            )
            clients[name] = await stack.enter_async_context(client)
        for name, client in clients.items():
            # Starting the later apps blocked the loop past the earlier ones' health
            # probes: each waits until its monitor sees the backend again.
            deadline = time.monotonic() + 60
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, f"{name}: not ready"
                await asyncio.sleep(0.2)
            for _ in range(100):
                r = await client.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, (name, r.text)
        for _ in range(0, requests, BATCH):
            for name, client in clients.items():
                started = time.process_time()
                for _ in range(BATCH):
                    t = time.perf_counter()
                    r = await client.post("/v1/chat/completions", json=body)
                    walls[name].append(1000 * (time.perf_counter() - t))
                    assert r.status_code == 200, (name, r.text)
                cpu[name] += time.process_time() - started
    done = len(walls[next(iter(walls))])
    return {name: (1000 * cpu[name] / done, walls[name]) for name in variants}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tests.support.modelkit import tiny_llama_dir
    from tests.support.otel_collector import Collector, rotel_binary

    binary = rotel_binary()
    if binary is None:
        raise SystemExit("needs rotel (pip install rotel==0.0.1a15: the dev extra)")
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    load_before = os.getloadavg()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tracing-")))
        backend_port = free_port()
        log = work / "backend.log"
        serve = [sys.executable, "-m", "loadtests.instant_backend", "--port", str(backend_port)]
        backend = stack.enter_context(started(serve, log))
        wait_ready(f"http://{HOST}:{backend_port}/health", backend, 300, interval=0.3, log=log)
        collector = Collector(binary, work / "rotel.log", free_port(), free_port(), debug_log=False)
        stack.callback(collector.stop)
        collector.wait_ready()
        configs = {}
        for name in ("off", "on, dropped", "on", "1 in 10"):
            path, key = loragate_config(backend_port, free_port(), tiny_llama_dir(), work)
            configs[name] = (Settings.load(path), key)
        endpoint = f"{collector.url}/v1/traces"
        variants: dict[str, Callable[[], Tracing]] = {
            "off": Tracing,
            "on, dropped": lambda: Tracing.exporting(DroppingExporter()),
            "on": lambda: Tracing.exporting(OTLPSpanExporter(endpoint=endpoint)),
            "1 in 10": lambda: Tracing.exporting(
                OTLPSpanExporter(endpoint=endpoint), sample_ratio=0.1
            ),
        }
        cpu: dict[tuple[str, bool], list[float]] = {}
        walls: dict[tuple[str, bool], list[float]] = {}
        for r in range(args.rounds):
            for stream in (True, False):
                print(f"round {r + 1}, stream={stream} ...", file=sys.stderr)
                measured = asyncio.run(measure(configs, variants, args.requests, stream))
                for name, (ms, w) in measured.items():
                    cpu.setdefault((name, stream), []).append(ms)
                    walls.setdefault((name, stream), []).extend(w)
    print_calls_table()
    print_table(cpu, walls, variants, args, load_before, os.getloadavg())
    return 0


def paired_added_p50(walls: list[float], off: list[float]) -> float:
    """Median over turns of (this turn's p50 - off's p50 in the same cycle), in ms."""
    turns = min(len(walls), len(off)) // BATCH
    return statistics.median(
        statistics.median(walls[k * BATCH : (k + 1) * BATCH])
        - statistics.median(off[k * BATCH : (k + 1) * BATCH])
        for k in range(turns)
    )


def print_table(
    cpu: dict[tuple[str, bool], list[float]],
    walls: dict[tuple[str, bool], list[float]],
    variants: dict[str, Callable[[], Tracing]],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    print(
        f"\nChat completion, 8 tokens, remote mode over an instant backend, in-process client; "
        f"{args.requests} requests per variant per round in turns of {BATCH}, "
        f"{args.rounds} rounds. Load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f} ({os.cpu_count()} CPUs).\n"
    )
    print(
        "| variant | request | CPU ms/request (median of rounds) | added CPU ms "
        "| wall p50 ms | added p50 ms | added p50 ms, paired | wall p99 ms |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for stream in (True, False):
        base_cpu = statistics.median(cpu[("off", stream)])
        base_p50 = statistics.median(walls[("off", stream)])
        for name in variants:
            c = statistics.median(cpu[(name, stream)])
            w = sorted(walls[(name, stream)])
            p50 = statistics.median(w)
            p99 = w[min(len(w) - 1, int(0.99 * len(w)))]
            added = "-" if name == "off" else f"{c - base_cpu:+.3f}"
            added_p50 = "-" if name == "off" else f"{p50 - base_p50:+.3f}"
            paired = (
                "-"
                if name == "off"
                else f"{paired_added_p50(walls[(name, stream)], walls[('off', stream)]):+.3f}"
            )
            kind = "streamed" if stream else "JSON"
            print(
                f"| {name} | {kind} | {c:.3f} | {added} | {p50:.3f} | {added_p50} | {paired} "
                f"| {p99:.2f} |"
            )


if __name__ == "__main__":
    sys.exit(main())
