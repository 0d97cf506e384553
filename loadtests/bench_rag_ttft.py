"""Time to first token with RAG on vs off, on the demo model, through ``loragate serve``.

Ingests a corpus with ``loragate rag ingest`` (the Debian Reference chapters 3, 4 and 8
when ``debian-reference-en`` is installed, else this repository's README and its
adapters and operations pages), starts
``loragate serve`` on loopback with the store preloaded, and sends the same questions
(streaming, one at a time or ``--concurrency`` at once) without ``"rag"`` and with
``"rag": {"top_k": k}`` for each ``k`` of ``--top-ks``, in alternating order. Prints
median and p90 TTFT and prompt tokens per setting, and the gateway's own retrieval
time (``loragate_retrieval_seconds``).

Every request starts with a system message of its own (a random id), so no request
reuses another's KV cache: each pays its whole prefill, as distinct questions with
distinct sources do. ``--allow-prefix-cache`` drops it (repeated questions then hit
vLLM's prefix cache and the sources cost far less).

    python -m loadtests.bench_rag_ttft [--rounds 2] [--top-ks 1,3,5] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtests.bench_serving import MODEL_ID, free_port, wait_ready

DEBIAN = Path("/usr/share/debian-reference")
DEBIAN_FILES = ("ch03.en.html", "ch04.en.html", "ch08.en.html")
QUESTIONS_FILE = Path(__file__).resolve().parents[1] / "retrieval" / "bench" / "questions.json"
ROOT = Path(__file__).resolve().parents[1]
README_DOCS = [ROOT / "README.md", ROOT / "docs" / "adapters.md", ROOT / "docs" / "operations.md"]
README_QUESTIONS = [
    "How do I start the demo?",
    "Which OpenAI SDK parameters do I change to use the gateway?",
    "How are adapters registered at runtime?",
    "How do I run the load tests?",
]
COLLECTION = "bench-docs"


def corpus() -> tuple[list[Path], list[str]]:
    """Documents to ingest and questions about them."""
    files = [DEBIAN / name for name in DEBIAN_FILES]
    if all(f.is_file() for f in files):
        labelled = json.loads(QUESTIONS_FILE.read_text())["questions"]
        questions = [q["question"] for q in labelled if q["document"] in DEBIAN_FILES]
        return files, questions
    return README_DOCS, README_QUESTIONS


def write_config(base: Path, workdir: Path, port: int) -> Path:
    config = {
        "model": {"path": str(base), "name": MODEL_ID},
        "engine": {"max_model_len": 2048, "max_loras": 2, "max_lora_rank": 8, "kv_cache_gib": 2},
        "registry": {"data_dir": str(workdir / "data")},
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "metrics": {"require_admin": False},
        "retrieval": {"preload": True, "max_top_k": 20},
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def one_request(
    client: httpx.AsyncClient, question: str, top_k: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One streamed chat; ``top_k`` 0: without retrieval."""
    messages = [{"role": "user", "content": question}]
    if not args.allow_prefix_cache:
        messages.insert(0, {"role": "system", "content": f"Request {uuid.uuid4().hex}."})
    body: dict[str, Any] = {
        "model": MODEL_ID,
        "messages": messages,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if top_k:
        body["rag"] = {"collection": COLLECTION, "top_k": top_k}
    started = time.perf_counter()
    ttft: float | None = None
    prompt_tokens = 0
    citations = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                prompt_tokens = chunk["usage"]["prompt_tokens"]
            citations = max(citations, len(chunk.get("citations") or ()))
    return {
        "top_k": top_k,
        "ttft_ms": 1000 * (ttft if ttft is not None else time.perf_counter() - started),
        "e2e_ms": 1000 * (time.perf_counter() - started),
        "prompt_tokens": prompt_tokens,
        "citations": citations,
    }


async def run_rounds(
    base_url: str, questions: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    limit = asyncio.Semaphore(args.concurrency)
    settings = [0, *args.top_ks]
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        for question in questions[:2]:  # warm-up: engine, tokenizer, embedder
            for top_k in settings:
                await one_request(client, question, top_k, args)
        before = retrieval_seconds((await client.get("/metrics")).text)

        async def limited(question: str, top_k: int) -> dict[str, Any]:
            async with limit:
                return await one_request(client, question, top_k, args)

        for r in range(args.rounds):
            for top_k in settings if r % 2 == 0 else settings[::-1]:
                batch = await asyncio.gather(*(limited(q, top_k) for q in questions))
                rows.extend({**row, "round": r} for row in batch)
                median = statistics.median(row["ttft_ms"] for row in batch)
                print(f"round {r} top_k={top_k}: median TTFT {median:.0f} ms", flush=True)
        after = retrieval_seconds((await client.get("/metrics")).text)
    searches = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("sum", "count")}
    rows.append({"retrieval": searches})
    return rows


def retrieval_seconds(metrics: str) -> dict[str, float]:
    values = {}
    for line in metrics.splitlines():
        for name in ("loragate_retrieval_seconds_sum", "loragate_retrieval_seconds_count"):
            if line.startswith(name + " "):
                values[name.rsplit("_", 1)[1]] = float(line.split()[1])
    return values


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, ingest_s: float) -> None:
    requests = [r for r in rows if "top_k" in r]
    retrieval = next(r["retrieval"] for r in rows if "retrieval" in r)
    cache = "prefix cache allowed" if args.allow_prefix_cache else "no prefix-cache reuse"
    questions = len(requests) // args.rounds // (len(args.top_ks) + 1)
    print(
        f"\nTTFT, demo model ({MODEL_ID}), streaming, max_tokens {args.max_tokens}, "
        f"concurrency {args.concurrency}, {args.rounds} rounds x {questions} "
        f"questions, {cache} (corpus of {args.chunks} chunks ingested in {ingest_s:.1f} s)\n"
    )
    print("| RAG | requests | median TTFT ms | p90 TTFT ms | median prompt tokens | sources |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for top_k in [0, *args.top_ks]:
        mine = [r for r in requests if r["top_k"] == top_k]
        ttft = [r["ttft_ms"] for r in mine]
        medians[top_k] = statistics.median(ttft)
        tokens = statistics.median(r["prompt_tokens"] for r in mine)
        sources = statistics.median(r["citations"] for r in mine)
        label = f"on, top_k {top_k}" if top_k else "off"
        print(
            f"| {label} | {len(mine)} | {medians[top_k]:.0f} | {percentile(ttft, 0.9):.0f} | "
            f"{tokens:.0f} | {sources:.0f} |"
        )
    count = retrieval["count"]
    mean_ms = 1000 * retrieval["sum"] / count if count else 0.0
    print(
        f"\nRetrieval inside the gateway (query embedding + search, thread hand-off included): "
        f"{mean_ms:.1f} ms on average over {count:.0f} searches; the rest of the added TTFT "
        "is the prefill of the sources."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--top-ks", type=lambda t: [int(k) for k in t.split(",")], default=[1, 3, 5]
    )
    parser.add_argument("--allow-prefix-cache", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-results/rag-ttft"))
    parser.add_argument(
        "--base", type=Path, default=None, help="base model folder (default: the demo kit's)"
    )
    args = parser.parse_args()

    if args.base is None:
        from adapters.tooling.demo_kit import ensure_demo_kit

        args.base = ensure_demo_kit().base_dir
    files, questions = corpus()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = write_config(args.base, Path(tmp), port)
        started = time.perf_counter()
        cli = [sys.executable, "-m", "gateway.cli"]
        ingest = [*cli, "rag", "ingest", "--config", str(config), "--collection", COLLECTION]
        done = subprocess.run(
            [*ingest, *map(str, files), "--no-progress", "--json"],
            check=True,
            stdout=subprocess.PIPE,
        )
        ingest_s = time.perf_counter() - started
        args.chunks = sum(d["chunk_count"] for d in json.loads(done.stdout))
        log = (args.out / "gateway.log").open("wb")
        server = subprocess.Popen(
            [*cli, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(base_url + "/ready", server)
            rows = asyncio.run(run_rounds(base_url, questions, args))
        finally:
            server.terminate()
            server.wait(60)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    print_table(rows, args, ingest_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
