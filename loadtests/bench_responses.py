"""Responses API vs chat completions on one gateway: the same prompts, the same engine.

Starts ``loragate serve`` on loopback with the demo model, then sends the same
streamed requests to ``/v1/chat/completions`` (a system message and a user message)
and to ``/v1/responses`` (``instructions`` and ``input``: the same rendered prompt),
``--concurrency`` at a time, alternating which API goes first in each round so machine
noise hits both alike. Every request starts with an id of its own in the system
message, so no request reuses another's KV cache. Greedy (temperature 0) with the same
``--max-tokens``: both APIs generate the same tokens.

Prints median TTFT (to the first text delta) and output tokens per second (all
requests' output tokens over the wall time of the batch) per API, and the
Responses/chat ratios (target: within 5%).

    python -m loadtests.bench_responses [--rounds 4] [--requests 32] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench_serving import MODEL_ID, free_port, start_gateway, wait_ready

QUESTIONS = [
    "Explain in a few sentences how a router forwards packets.",
    "Write a short note about why backups should be tested.",
    "Describe what a load balancer does for a web service.",
    "Give three tips for writing clear error messages.",
]


@dataclass(frozen=True)
class Sample:
    api: str
    ttft: float
    decode: float
    """Seconds from the first text delta to the last one."""
    output_tokens: int

    @property
    def decode_tps(self) -> float:
        """The request's own output rate after its first token."""
        return (self.output_tokens - 1) / self.decode if self.decode > 0 else 0.0


def demo_base() -> Path:
    """The demo kit's base model (SmolLM2-135M-Instruct), converted into the kit's cache
    if it is not there yet; no adapters are needed here, so none are trained."""
    from adapters.tooling.demo_kit import LOCK_FILE, default_cache_dir, demo_kit_key, exclusive_lock
    from adapters.tooling.smollm2 import convert_smollm2, smollm2_gguf_path

    gguf = smollm2_gguf_path()
    key = demo_kit_key(gguf_name=gguf.name, gguf_size=gguf.stat().st_size)
    cache = default_cache_dir()
    base = cache / f"smollm2-135m-instruct-{key['gguf_id']}"
    if not base.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(cache / LOCK_FILE):
            if not base.exists():
                convert_smollm2(base, gguf_path=gguf)
    return base


def bodies(api: str, i: int, max_tokens: int) -> tuple[str, dict[str, Any]]:
    system = f"Request {uuid.uuid4().hex}. You are a helpful assistant."
    question = QUESTIONS[i % len(QUESTIONS)]
    if api == "chat":
        return "/v1/chat/completions", {
            "model": MODEL_ID,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            "max_completion_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    return "/v1/responses", {
        "model": MODEL_ID,
        "instructions": system,
        "input": question,
        "max_output_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "store": False,
    }


async def one(client: httpx.AsyncClient, api: str, i: int, max_tokens: int) -> Sample:
    path, body = bodies(api, i, max_tokens)
    start = time.perf_counter()
    first: float | None = None
    last = 0.0
    tokens = 0
    async with client.stream("POST", path, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            if api == "chat":
                if any(c["delta"].get("content") for c in event["choices"]):
                    last = time.perf_counter()
                    first = first or last
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
            else:
                if event["type"] == "response.output_text.delta":
                    last = time.perf_counter()
                    first = first or last
                if event["type"] in ("response.completed", "response.incomplete"):
                    tokens = event["response"]["usage"]["output_tokens"]
    assert first is not None and tokens, f"{api}: no text or no usage"
    return Sample(api, first - start, last - first, tokens)


async def batch(
    url: str, apis: list[str], concurrency: int, max_tokens: int
) -> list[dict[str, Any]]:
    """One request per entry of ``apis``, ``concurrency`` at a time; a row per API."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False) as client:

        async def limited(i: int, api: str) -> Sample:
            async with gate:
                return await one(client, api, i, max_tokens)

        start = time.perf_counter()
        samples = await asyncio.gather(*(limited(i, api) for i, api in enumerate(apis)))
        wall = time.perf_counter() - start
    rows = []
    for api in dict.fromkeys(apis):
        mine = [s for s in samples if s.api == api]
        rows.append(
            {
                "api": api,
                "median_ttft_ms": 1000 * statistics.median(s.ttft for s in mine),
                "median_decode_tps": statistics.median(s.decode_tps for s in mine),
                "output_tps": sum(s.output_tokens for s in mine) / wall,
                "output_tokens": sum(s.output_tokens for s in mine),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32, help="per API per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench-results/responses"))
    parser.add_argument("--model", type=Path, help="model folder (default: the demo base)")
    parser.add_argument(
        "--paired",
        action="store_true",
        help="send both APIs' requests in the same batches (each request alternately chat "
        "and responses): both meet the same load, so machine noise cancels out",
    )
    args = parser.parse_args()

    base = args.model or demo_base()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        log = args.out / "gateway.log"
        proc = start_gateway(base, {}, port, Path(tmp) / "gw", log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(f"{url}/ready", proc, log=log)
            warm = ["chat", "responses"] * args.concurrency  # compile paths, fill caches
            asyncio.run(batch(url, warm, args.concurrency, 8))
            for r in range(args.rounds):
                order = ("chat", "responses") if r % 2 == 0 else ("responses", "chat")
                if args.paired:  # both APIs in one batch, alternating request by request
                    plans = [[order[i % 2] for i in range(2 * args.requests)]]
                else:  # one batch per API, alternating which goes first
                    plans = [[api] * args.requests for api in order]
                for apis in plans:
                    for row in asyncio.run(batch(url, apis, args.concurrency, args.max_tokens)):
                        rows.append({"round": r, **row})
                        print(json.dumps(rows[-1]), flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
    print_table(rows, args)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    return 0


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    how = "in the same batches" if args.paired else "in alternating batches"
    print(
        f"\n{args.requests} streamed requests per API per round {how}, concurrency "
        f"{args.concurrency}, up to {args.max_tokens} tokens, greedy, {args.rounds} rounds "
        "(medians of the rounds)\n"
    )
    # Paired, both APIs share each batch's wall time: the batch rate then compares
    # nothing but the tokens each produced.
    print("| API | median TTFT ms | per-request output tok/s | batch output tok/s |")
    print("|---|---|---|---|")
    keys = ("median_ttft_ms", "median_decode_tps", "output_tps")
    medians: dict[str, list[float]] = {}
    for api in ("chat", "responses"):
        mine = [r for r in rows if r["api"] == api]
        medians[api] = [statistics.median(r[k] for r in mine) for k in keys]
        ttft, decode, tps = medians[api]
        print(f"| {api} | {ttft:.0f} | {decode:.1f} | {tps:.1f} |")
    ratios = [medians["responses"][i] / medians["chat"][i] for i in range(3)]
    print(
        f"\nresponses / chat: TTFT {ratios[0]:.3f}x, per-request output tok/s "
        f"{ratios[1]:.3f}x, batch output tok/s {ratios[2]:.3f}x (target: within 5%)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
