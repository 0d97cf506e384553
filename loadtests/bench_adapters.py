"""Adapter benchmark: cold load, and throughput against the number of distinct adapters.

    python -m loadtests.bench_adapters [--base demo|tiny|PATH] [--samples 20]
        [--requests 32] [--max-tokens 64] [--concurrency 16] [--rounds 1]

A gateway is started (``loragate serve``, subprocess) on the base model with
``max_loras=4`` and ``max_cpu_loras=8``; adapters are random rank-8 LoRAs on
q/k/v/o (they cost what trained ones cost), registered through the admin API.

1. Cold load, engine otherwise idle, one request at a time, unique prompts (no prefix
   cache hits), p50/p99 over ``--samples``; the base model's time to first token is
   the reference:
   - *resident*: time to first token of an adapter that was just used (in a slot);
   - *on disk*: time to first token of the first request to a registered version that
     was never loaded (the engine reads it from disk for that request);
   - *new adapter*: ``POST /admin/adapters`` (validate, copy, load, activate) until the
     first token of the first request, the whole "registration to first token".
2. Throughput: ``--requests`` chat requests of exactly ``--max-tokens`` tokens
   (``ignore_eos``) at ``--concurrency``, spread round-robin over 0 (base only), 1, 2,
   4 and 8 distinct adapters; output tokens/s and the ratio to base only.

Prints both tables; writes ``summary.json`` and ``bench_adapters.png`` to ``--out``.
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

from loadtests.bench_serving import free_port, wait_ready

BASE_ID = "bench-base"
ADMIN_KEY = "bench-admin-key-" + uuid.uuid4().hex
ENGINE = {
    "max_model_len": 2048,
    "max_loras": 4,
    "max_cpu_loras": 8,
    "max_lora_rank": 8,
    "kv_cache_gib": 2,
}
DISTINCT = (0, 1, 2, 4, 8)


def base_model(choice: str) -> Path:
    if choice == "tiny":
        from tests.support.modelkit import tiny_llama_dir

        return tiny_llama_dir()
    if choice != "demo":
        return Path(choice)
    from adapters.tooling.demo_kit import ensure_demo_kit

    return ensure_demo_kit().base_dir


def write_adapters(base: Path, root: Path, names: list[str], first_seed: int) -> dict[str, Path]:
    # The tests' random PEFT adapter writer: shapes from the base's config.json.
    from tests.support.modelkit import write_random_adapter

    return {
        name: write_random_adapter(base, root / name, seed=first_seed + i, scale=0.05)
        for i, name in enumerate(names)
    }


def start_gateway(base: Path, workdir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    config = {
        "model": {"path": str(base), "name": BASE_ID},
        "engine": ENGINE,
        "registry": {"data_dir": str(workdir / "registry"), "allowed_roots": [str(workdir)]},
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "LORAGATE_ADMIN__API_KEY": ADMIN_KEY, "VLLM_NO_USAGE_STATS": "1"}
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)]
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def prompt() -> list[dict[str, str]]:
    nonce = uuid.uuid4().hex[:12]
    return [{"role": "user", "content": f"Note {nonce}. Write a short story about the sea."}]


async def first_token_s(client: httpx.AsyncClient, model: str) -> float:
    """Seconds from sending a streamed request to its first content token."""
    body = {"model": model, "messages": prompt(), "max_tokens": 2, "temperature": 0, "stream": True}
    start = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {r.status_code} {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                return time.perf_counter() - start
    raise RuntimeError(f"{model}: no token")


async def register(
    client: httpx.AsyncClient, name: str, path: Path, *, activate: bool
) -> dict[str, Any]:
    body = {"name": name, "path": str(path), "activate": activate}
    r = await client.post("/admin/adapters", json=body)
    if r.status_code != 201:
        raise RuntimeError(f"registering {name}: HTTP {r.status_code} {r.text[:300]}")
    result: dict[str, Any] = r.json()
    return result


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000, "n": len(ordered)}


async def cold_load(
    client: httpx.AsyncClient, base: Path, workdir: Path, samples: int
) -> dict[str, dict[str, float]]:
    on_disk = write_adapters(base, workdir, [f"disk{i}" for i in range(samples)], 1000)
    fresh = write_adapters(base, workdir, [f"new{i}" for i in range(samples)], 2000)
    for name, path in on_disk.items():
        await register(client, name, path, activate=False)  # registered, never loaded
    reference, resident, disk, new = [], [], [], []
    for i in range(samples):
        reference.append(await first_token_s(client, BASE_ID))
        await first_token_s(client, "t1")
        resident.append(await first_token_s(client, "t1"))
        disk.append(await first_token_s(client, f"disk{i}@v1"))
        start = time.perf_counter()
        await register(client, f"new{i}", fresh[f"new{i}"], activate=True)
        await first_token_s(client, f"new{i}")
        new.append(time.perf_counter() - start)
    return {
        "base model (no adapter): first token": percentiles(reference),
        "resident: first token": percentiles(resident),
        "on disk (registered, never loaded): first token": percentiles(disk),
        "new adapter: registration -> first token": percentiles(new),
    }


async def throughput(
    client: httpx.AsyncClient, models: list[str], args: argparse.Namespace
) -> float:
    """Output tokens/s of ``args.requests`` requests spread round-robin over ``models``."""
    gate = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> int:
        body = {
            "model": models[i % len(models)],
            "messages": prompt(),
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        async with gate:
            r = await client.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(args.requests)))
    return sum(tokens) / (time.perf_counter() - start)


async def run(args: argparse.Namespace, base: Path, workdir: Path, url: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:
        load = write_adapters(base, workdir, [f"t{i}" for i in range(1, 9)], 1)
        for name, path in load.items():
            await register(client, name, path, activate=True)
        for model in (BASE_ID, "t1"):  # warm-up: compile paths, first allocations
            await first_token_s(client, model)
        cold = await cold_load(client, base, workdir, args.samples)
        print(json.dumps(cold, indent=2), flush=True)
        rates: dict[int, list[float]] = {k: [] for k in DISTINCT}
        for r in range(args.rounds):
            for k in DISTINCT if r % 2 == 0 else DISTINCT[::-1]:
                models = [BASE_ID] if k == 0 else [f"t{i}" for i in range(1, k + 1)]
                rates[k].append(await throughput(client, models, args))
                print(f"round {r}: {k} adapters: {rates[k][-1]:.1f} tok/s", flush=True)
    return {"cold_load": cold, "throughput": {k: statistics.median(v) for k, v in rates.items()}}


def report(result: dict[str, Any], args: argparse.Namespace, base: Path) -> None:
    print(f"\nbase model: {base} | engine: {ENGINE}\n")
    print(f"Cold load ({args.samples} samples each, one request at a time)\n")
    print("| case | p50 ms | p99 ms |\n|---|---|---|")
    for case, p in result["cold_load"].items():
        print(f"| {case} | {p['p50_ms']:.0f} | {p['p99_ms']:.0f} |")
    base_rate = result["throughput"][0]
    print(
        f"\nThroughput: {args.requests} requests x {args.max_tokens} output tokens, "
        f"concurrency {args.concurrency}, median of {args.rounds} round(s)\n"
    )
    print("| distinct adapters | output tok/s | vs base only |\n|---|---|---|")
    for k, rate in result["throughput"].items():
        label = "0 (base only)" if k == 0 else str(k)
        print(f"| {label} | {rate:.1f} | {rate / base_rate:.2f}x |")


def plot(result: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ks = list(result["throughput"])
    base_rate = result["throughput"][0]
    rel = [result["throughput"][k] / base_rate for k in ks]
    left.bar(
        [str(k) if k else "base" for k in ks], rel, color=["grey"] + ["tab:blue"] * (len(ks) - 1)
    )
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_ylim(0, max(rel) * 1.15)
    left.set(
        xlabel="distinct adapters in the load (max_loras = 4)", ylabel="throughput / base only"
    )
    left.set_title("Throughput relative to base only")
    for x, y in enumerate(rel):
        left.text(x, y, f"{y:.2f}x", ha="center", va="bottom")
    cases = list(result["cold_load"])
    p50 = [result["cold_load"][c]["p50_ms"] for c in cases]
    p99 = [result["cold_load"][c]["p99_ms"] for c in cases]
    xs = range(len(cases))
    right.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    right.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    right.set_xticks(list(xs), ["base model", "resident", "on disk", "new adapter\n(register)"])
    right.set(ylabel="ms to first token")
    right.set_title("Cold load")
    right.legend()
    fig.tight_layout()
    path = out / "bench_adapters.png"
    fig.savefig(path, dpi=120)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="demo", help="demo, tiny, or a model folder")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-results/adapters"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = base_model(args.base)
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        workdir, port = Path(tmp), free_port()
        server = start_gateway(base, workdir, port, args.out / "gateway.log")
        try:
            wait_ready(f"http://127.0.0.1:{port}/ready", server)
            result = asyncio.run(run(args, base, workdir, f"http://127.0.0.1:{port}"))
        finally:
            server.terminate()
            server.wait(60)
    report(result, args, base)
    summary = {"base": str(base), "engine": ENGINE, "args": vars(args) | {"out": str(args.out)}}
    (args.out / "summary.json").write_text(json.dumps(summary | result, indent=2))
    print(f"\nplot: {plot(result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
