"""``/v1/embeddings`` throughput: inputs per second through the gateway against the
embedder called directly in this process. Prints a Markdown table.

    python -m loadtests.bench_embeddings [--seconds 60] [--rounds 4] [--concurrency 32] [--batch 32]

The inputs are RAG-sized chunks of the demo manuals (English, ``--words`` words each,
windows at half-chunk steps, all distinct; 100 words: 116-170 all-MiniLM-L6-v2
word-pieces, median 140). Rows:

- *direct*: ``embed_documents`` on ``--batch`` chunks at a time, in this process, the
  gateway idle meanwhile (the baseline: what the embedder gives with nothing around it);
- *single-input requests*: ``--concurrency`` clients, each sending one chunk per request
  (its own chunk), which the gateway's micro-batcher combines into embedder calls;
- *batched requests*: ``--batch`` chunks per request, 1 and 2 clients.

The rows take turns, ``--rounds`` times, so that the machine's other load (the figures
come from shared 2-core boxes) falls on every row alike.

Requests ask for ``encoding_format: base64`` (the OpenAI SDK's default). The gateway
runs as ``loragate serve`` would (one uvicorn worker; a tenant with an API key and rate
limits; the engine a remote instant backend, unused here), its embedder loaded by the
warm-up requests. The client (``loadtests.raw_load``'s connections, in this process)
shares the machine's cores with the gateway: its CPU time goes with the table. Besides
inputs per second, the table gives inputs per CPU-second of whoever embeds (this process
for *direct*, the gateway's process for the others): on a shared machine the wall-clock
rate moves with the neighbours' load, the CPU cost much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtests.bench_overhead import started, tree_cpu_seconds
from loadtests.bench_serving import wait_ready
from loadtests.instant_backend import MODEL
from loadtests.raw_load import Connection, ResponseError, build_request
from loadtests.target import free_port

HOST = "127.0.0.1"
KB = Path(__file__).resolve().parent.parent / "gateway" / "demo" / "kb"


def chunks(words: int, count: int) -> list[str]:
    """``count`` distinct windows of ``words`` words over the demo's English manuals."""
    text = " ".join(p.read_text() for p in sorted(KB.glob("*/en/*.md"))).split()
    step = max(1, words // 2)
    windows = [" ".join(text[i : i + words]) for i in range(0, len(text) - words, step)]
    if len(windows) < count:
        raise SystemExit(f"only {len(windows)} chunks of {words} words in {KB}")
    return windows[:count]


@dataclass
class Row:
    name: str
    inputs: int = 0
    seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    client_cpu: float = 0.0
    embed_cpu: float = 0.0
    calls: float = 0.0
    """Embedder calls (the gateway's ``loragate_embedding_batch_inputs_count``)."""
    """CPU seconds of whoever embeds: this process (direct) or the gateway's."""

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    @property
    def per_cpu(self) -> float:
        return self.inputs / self.embed_cpu if self.embed_cpu else 0.0


def measure_direct(embedder: Any, texts: list[str], seconds: float, row: Row) -> None:
    """``embed_documents(texts)`` over and over for ``seconds``, added to ``row``."""
    cpu_before = time.process_time()
    started_at = time.perf_counter()
    while time.perf_counter() - started_at < seconds:
        embedder.embed_documents(texts)
        row.inputs += len(texts)
        row.requests += 1
    row.seconds += time.perf_counter() - started_at
    row.embed_cpu += time.process_time() - cpu_before


async def measure_gateway(
    pid: int,
    port: int,
    key: str,
    bodies: list[dict[str, Any]],
    concurrency: int,
    seconds: float,
    name: str,
) -> Row:
    """``concurrency`` workers; worker i sends ``bodies[i % len(bodies)]`` over and over."""
    requests = [
        build_request(HOST, port, "/v1/embeddings", bodies[i % len(bodies)], key)
        for i in range(concurrency)
    ]
    sizes = [len(bodies[i % len(bodies)]["input"]) for i in range(concurrency)]
    connections = [Connection(HOST, port) for _ in range(concurrency)]
    row = Row(name)
    # Warm-up, all at once (an idle keep-alive connection is closed by the server after
    # 5 s); the first loads the embedder.
    await asyncio.gather(*(c.call(r) for c, r in zip(connections, requests, strict=True)))
    for conn in connections:  # some waited past the keep-alive timeout for the slowest
        await conn.close()
    deadline = 0.0

    async def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            try:
                body = await connections[i].call(requests[i])
                if b'"embedding"' not in body:
                    raise ResponseError(f"no embeddings: {body[:200]!r}")
            except (ResponseError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                row.errors += 1
                row.first_error = row.first_error or f"{type(exc).__name__}: {exc}"
                await connections[i].close()
                continue
            row.inputs += sizes[i]
            row.requests += 1

    calls_before = embedder_calls(port)
    cpu_before, server_before = time.process_time(), tree_cpu_seconds(pid)
    started_at = time.perf_counter()
    deadline = started_at + seconds
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    row.seconds = time.perf_counter() - started_at
    row.client_cpu = time.process_time() - cpu_before
    row.embed_cpu = tree_cpu_seconds(pid) - server_before
    row.calls = embedder_calls(port) - calls_before
    for conn in connections:
        await conn.close()
    return row


def embedder_calls(port: int) -> float:
    """The gateway's embedder calls so far, from its /metrics (open in this config)."""
    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=30, trust_env=False).text
    for line in text.splitlines():
        if line.startswith("loragate_embedding_batch_inputs_count"):
            return float(line.split()[-1])
    return 0.0


def gateway_config(
    backend_port: int, port: int, work: Path, args: argparse.Namespace
) -> tuple[Path, str]:
    from gateway.rag.embeddings import served_embedder_id
    from gateway.settings import RetrievalSettings
    from gateway.settings.keys import generate_key
    from tests.support.modelkit import tiny_llama_dir  # the tests' tokenizer + config folder

    key = generate_key()
    # Loaded by the first (warm-up) request: preloading overlaps the prompt renderer's
    # start-up, and two threads importing transformers' lazy modules at once can fail.
    retrieval = {"embedder": args.embedder, "preload": False, "root": str(work / "collections")}
    embedder_id = served_embedder_id(RetrievalSettings.model_validate(retrieval))
    config = {
        "model": {"path": str(tiny_llama_dir()), "name": MODEL},
        "engine": {"kind": "remote", "replicas": [f"http://{HOST}:{backend_port}"]},
        "server": {"host": HOST, "port": port, "log_level": "warning"},
        "registry": {"data_dir": str(work / "data")},
        "metrics": {"require_admin": False},
        "retrieval": retrieval,
        "tenants": {
            "bench": {
                "keys": [{"id": key.key_id, "hash": key.hash}],
                "models": [MODEL, embedder_id],
                "rate_limit": {
                    "requests_per_minute": 10_000_000,
                    "tokens_per_minute": 1_000_000_000,
                },
            }
        },
    }
    path = work / "loragate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, key.key


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per row, all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="rows measured in turn")
    parser.add_argument("--concurrency", type=int, default=32, help="single-input clients")
    parser.add_argument("--batch", type=int, default=32, help="inputs per batched request")
    parser.add_argument("--words", type=int, default=100, help="words per input")
    parser.add_argument("--embedder", default="minilm", help="retrieval.embedder")
    args = parser.parse_args()
    from gateway.rag.embeddings import served_embedder_id
    from gateway.settings import RetrievalSettings

    model = served_embedder_id(RetrievalSettings(embedder=args.embedder))
    texts = chunks(args.words, max(args.batch, args.concurrency))
    single = [{"model": model, "input": [t], "encoding_format": "base64"} for t in texts]
    batched = [
        {"model": model, "input": texts[i : i + args.batch], "encoding_format": "base64"}
        for i in range(0, len(texts) - args.batch + 1, args.batch)
    ]
    load_before = os.getloadavg()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-embed-")))
        backend_port, port = free_port(), free_port()
        backend_log, log = work / "backend.log", work / "loragate.log"
        backend = stack.enter_context(
            started(
                [sys.executable, "-m", "loadtests.instant_backend", "--port", str(backend_port)],
                backend_log,
            )
        )
        wait_ready(f"http://{HOST}:{backend_port}/health", backend, 300, interval=0.3)
        config, key = gateway_config(backend_port, port, work, args)
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
        gateway = stack.enter_context(started(cmd, log))
        wait_ready(f"http://{HOST}:{port}/ready", gateway, 300, interval=0.3, log=log)
        from gateway.rag.provider import build_embedder

        embedder = build_embedder(RetrievalSettings(embedder=args.embedder))
        embedder.embed_documents(texts[: args.batch])  # warm-up
        direct = Row(f"direct `embed_documents`, {args.batch} per call")
        plans = [
            (single, args.concurrency, f"gateway, 1 input per request, {args.concurrency} clients"),
            (batched, 1, f"gateway, {args.batch} inputs per request, 1 client"),
            (batched, 2, f"gateway, {args.batch} inputs per request, 2 clients"),
        ]
        rows = [direct, *(Row(name) for _, _, name in plans)]
        # Rounds of every row in turn: the machine's other load moves, and interleaving
        # spreads it over the rows alike.
        seconds = args.seconds / args.rounds
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}/{args.rounds}: the embedder directly ...", file=sys.stderr)
            measure_direct(embedder, texts[: args.batch], seconds, direct)
            for (bodies, concurrency, name), row in zip(plans, rows[1:], strict=True):
                print(f"round {round_}/{args.rounds}: {name} ...", file=sys.stderr)
                part = asyncio.run(
                    measure_gateway(gateway.pid, port, key, bodies, concurrency, seconds, name)
                )
                row.inputs += part.inputs
                row.seconds += part.seconds
                row.requests += part.requests
                row.errors += part.errors
                row.client_cpu += part.client_cpu
                row.embed_cpu += part.embed_cpu
                row.calls += part.calls
                row.first_error = row.first_error or part.first_error
    print_table(rows, args, model, load_before, os.getloadavg())
    return 1 if any(r.errors or not r.inputs for r in rows) else 0


def print_table(
    rows: list[Row],
    args: argparse.Namespace,
    model: str,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    base = rows[0].rate
    print(
        f"\n`{model}`, {args.words}-word chunks, {args.seconds:.0f} s per row in "
        f"{args.rounds} rounds; "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {cpu_model()}, "
        f"{os.cpu_count()} CPUs; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after\n"
    )
    base_cpu = rows[0].per_cpu
    print(
        "| path | inputs/s | vs direct | inputs per CPU-s | vs direct | requests "
        "| inputs per embedder call | client CPU s | errors |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        ratio = f"{row.rate / base:.2f}x" if base else "-"
        cpu_ratio = f"{row.per_cpu / base_cpu:.2f}x" if base_cpu else "-"
        client = f"{row.client_cpu:.1f}" if row.client_cpu else "-"
        per_call = f"{row.inputs / row.calls:.1f}" if row.calls else str(args.batch)
        print(
            f"| {row.name} | {row.rate:.1f} | {ratio} | {row.per_cpu:.1f} | {cpu_ratio} "
            f"| {row.requests} | {per_call} | {client} | {row.errors} |"
        )
        if row.first_error:
            print(f"\nfirst error ({row.name}): {row.first_error}")


if __name__ == "__main__":
    sys.exit(main())
