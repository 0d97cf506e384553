"""Benchmark 3: adapter-affinity placement vs round robin over two vLLM replicas.

Two ``vllm.entrypoints.openai.api_server`` replicas (SmolLM2-135M-Instruct from the
demo kit, float32, each engine bound to its own core) with fewer adapter slots than
adapters (``--max-loras 2 --max-cpu-loras 2``), eight random rank-8 LoRA adapters
whose popularity follows a Zipf law, and one gateway in remote mode per placement
policy (``engine.placement: affinity`` or ``round_robin``). Every policy gets the same
seeded request sequence (adapter, prompt) at the same concurrency. Between runs the
replicas forget every adapter (``/v1/unload_lora_adapter``), so each run starts cold.

Reported per policy: adapter loads per replica (the ``Loaded new LoRA adapter`` lines
each replica logs for ``/v1/load_lora_adapter``), requests per replica, output tok/s
and median latency. Policies alternate ABBA over ``--rounds`` so drift hits both.

    python -m loadtests.bench_affinity [--requests 48] [--concurrency 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from adapters.tooling.random_lora import write_random_lora
from loadtests.bench_serving import wait_ready
from loadtests.replica_process import ReplicaProcess, exit_on_sigterm
from loadtests.target import free_port

MODEL_ID = "smollm2-135m-instruct"
POLICIES = ("affinity", "round_robin")


@dataclass(frozen=True)
class Job:
    adapter: str
    prompt: list[int]


def zipf_weights(n: int, s: float) -> list[float]:
    """Popularity of the ``n`` adapters, most popular first: p(i) ~ 1 / i**s."""
    raw = [1.0 / (i**s) for i in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def request_sequence(
    adapters: list[str], count: int, *, s: float, input_len: int, vocab: int, seed: int
) -> list[Job]:
    """The seeded request sequence every policy replays: Zipf-drawn adapters, random
    token-id prompts (the same for a given seed, whatever the policy)."""
    rng = random.Random(seed)
    names = rng.choices(adapters, weights=zipf_weights(len(adapters), s), k=count)
    return [Job(n, [rng.randrange(100, vocab) for _ in range(input_len)]) for n in names]


def run_order(rounds: int) -> list[str]:
    """ABBA...: affinity, round_robin, round_robin, affinity, ..."""
    order: list[str] = []
    for r in range(rounds):
        order += list(POLICIES) if r % 2 == 0 else list(reversed(POLICIES))
    return order


def gateway_config(
    base: Path,
    adapters: dict[str, Path],
    replicas: list[str],
    policy: str,
    port: int,
    data_dir: Path,
    max_loras: int,
) -> dict[str, Any]:
    return {
        "model": {"path": str(base), "name": MODEL_ID},
        "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()],
        "engine": {
            "kind": "remote",
            "replicas": replicas,
            "placement": policy,
            "max_loras": max_loras,
            "max_cpu_loras": max_loras,
            "max_lora_rank": 8,
            # CPU replicas: a bigger batch costs about as much as another replica's
            # time, so balance from the first request (see engine.balance_floor).
            "balance_floor": 0,
        },
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "registry": {"data_dir": str(data_dir)},
    }


async def replay(
    url: str, jobs: list[Job], *, concurrency: int, output_len: int
) -> dict[str, float]:
    """Send ``jobs`` in order with ``concurrency`` workers; output tok/s and latencies."""
    queue = iter(jobs)
    latencies: list[float] = []
    tokens = 0
    failed = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal tokens, failed
        for job in queue:  # one shared iterator: jobs leave in sequence order
            body = {
                "model": job.adapter,
                "prompt": job.prompt,
                "max_tokens": output_len,
                "temperature": 0,
                "ignore_eos": True,
            }
            started = time.perf_counter()
            response = await client.post("/v1/completions", json=body)
            if response.status_code != 200:
                failed += 1
                continue
            latencies.append(time.perf_counter() - started)
            tokens += response.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "output_tps": tokens / elapsed,
        "median_latency_s": statistics.median(latencies) if latencies else float("nan"),
        "failed": failed,
        "seconds": elapsed,
    }


def forget_adapters(replicas: list[ReplicaProcess]) -> None:
    """Deregister every adapter on every replica: the next run starts cold."""
    for replica in replicas:
        models = httpx.get(replica.url + "/v1/models", timeout=30).json()["data"]
        for model in models:
            if model.get("parent"):
                httpx.post(
                    replica.url + "/v1/unload_lora_adapter",
                    json={"lora_name": model["id"]},
                    timeout=60,
                ).raise_for_status()


def run_policy(
    policy: str,
    config: dict[str, Any],
    workdir: Path,
    replicas: list[ReplicaProcess],
    jobs: list[Job],
    args: argparse.Namespace,
) -> dict[str, Any]:
    forget_adapters(replicas)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "gateway.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(workdir / "gateway.yaml")]
    log = args.out / f"gateway-{workdir.name}.log"
    loads_at_launch = [len(r.adapter_loads()) for r in replicas]
    gateway = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{config['server']['port']}"
        wait_ready(url + "/ready", gateway, 600, interval=0.5)
        loads_at_ready = [len(r.adapter_loads()) for r in replicas]
        served_before = [r.completions_served() for r in replicas]
        result = asyncio.run(
            replay(url, jobs, concurrency=args.concurrency, output_len=args.output_len)
        )
        loads_at_end = [len(r.adapter_loads()) for r in replicas]
        served = [r.completions_served() - b for r, b in zip(replicas, served_before, strict=True)]
    finally:
        gateway.terminate()
        gateway.wait(60)
    # Start-up loads: the gateway registers its config's adapters (affinity: on their
    # home replica); run loads: those the requests caused.
    return {
        "policy": policy,
        "startup_loads": [b - a for a, b in zip(loads_at_launch, loads_at_ready, strict=True)],
        "loads": [b - a for a, b in zip(loads_at_ready, loads_at_end, strict=True)],
        "requests": served,
        **result,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for policy in POLICIES:
        mine = [r for r in runs if r["policy"] == policy]
        if not mine:
            continue
        out[policy] = {
            "startup_loads": [
                statistics.median(r["startup_loads"][i] for r in mine) for i in range(2)
            ],
            "loads": [statistics.median(r["loads"][i] for r in mine) for i in range(2)],
            "requests": [statistics.median(r["requests"][i] for r in mine) for i in range(2)],
            "output_tps": statistics.median(r["output_tps"] for r in mine),
            "median_latency_s": statistics.median(r["median_latency_s"] for r in mine),
            "failed": sum(r["failed"] for r in mine),
        }
    return out


def render_table(summary: dict[str, dict[str, Any]], header: str) -> str:
    lines = [
        header,
        "",
        "| policy | adapter loads at start-up (replica 0 / 1) | adapter loads during the run "
        "| requests (replica 0 / 1) | output tok/s | median latency s | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for policy, s in summary.items():
        startup = " / ".join(f"{x:g}" for x in s["startup_loads"])
        loads = " / ".join(f"{x:g}" for x in s["loads"])
        reqs = " / ".join(f"{x:g}" for x in s["requests"])
        lines.append(
            f"| {policy} | {startup} | {loads} (total {sum(s['loads']):g}) | {reqs} "
            f"| {s['output_tps']:.1f} | {s['median_latency_s']:.2f} | {s['failed']} |"
        )
    if set(POLICIES) <= set(summary):
        a, b = summary["affinity"], summary["round_robin"]
        total_a = sum(a["loads"]) + sum(a["startup_loads"])
        total_b = sum(b["loads"]) + sum(b["startup_loads"])
        lines.append(
            f"| **affinity / round robin** | | {total_a:g} vs {total_b:g} loads in all | "
            f"| **{a['output_tps'] / b['output_tps']:.3f}x** tok/s | | |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent s")
    parser.add_argument("--max-loras", type=int, default=2, help="each replica's slots")
    parser.add_argument("--rounds", type=int, default=1, help="1: A B; 2: A B B A")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-results/affinity"))
    args = parser.parse_args()
    exit_on_sigterm()

    from adapters.tooling.demo_kit import ensure_demo_kit

    base = ensure_demo_kit().base_dir
    args.out.mkdir(parents=True, exist_ok=True)
    adapter_root = args.out / "adapters"
    # Small random weights: they cost what a trained adapter costs to load and apply,
    # which is all a throughput benchmark needs; reused when this script wrote them already.
    adapters = {f"z{i}": adapter_root / f"z{i}" for i in range(1, args.adapters + 1)}
    for i, path in enumerate(adapters.values(), start=1):
        if not (path / "adapter_config.json").exists():
            write_random_lora(base, path, seed=i)
    vocab = int(json.loads((base / "config.json").read_text())["vocab_size"])
    jobs = request_sequence(
        list(adapters),
        args.requests,
        s=args.zipf,
        input_len=args.input_len,
        vocab=vocab,
        seed=args.seed,
    )
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        replicas = []
        for core in (0, 1):
            log = args.out / f"replica{core}.log"
            log.unlink(missing_ok=True)
            replica = ReplicaProcess(
                base,
                core=core,
                log=log,
                served_model_name=MODEL_ID,
                max_model_len=1024,
                max_loras=args.max_loras,
                max_cpu_loras=args.max_loras,
                kv_cache_bytes=512 * 1024 * 1024,
            )  # access log on: it counts the requests each replica served
            replica.start()
            stack.callback(replica.kill)
            replicas.append(replica)
        for replica in replicas:
            replica.wait_ready()
        for i, policy in enumerate(run_order(args.rounds)):
            workdir = Path(tmp) / f"{policy}-{i}"
            config = gateway_config(
                base,
                adapters,
                [r.url for r in replicas],
                policy,
                free_port(),
                workdir / "data",
                args.max_loras,
            )
            runs.append(run_policy(policy, config, workdir, replicas, jobs, args))
            print(json.dumps(runs[-1]), flush=True)
    load_after = os.getloadavg()
    popularity = Counter(j.adapter for j in jobs)
    header = (
        f"{args.requests} requests ({args.input_len} token ids in / {args.output_len} out, "
        f"ignore_eos), concurrency {args.concurrency}, {args.adapters} adapters, Zipf "
        f"s={args.zipf} (requests per adapter: "
        + ", ".join(f"{n} {popularity[n]}" for n in adapters)
        + f"), 2 replicas with --max-loras {args.max_loras} --max-cpu-loras {args.max_loras}, "
        f"{args.rounds} round(s); load average (1 min) {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    summary = summarize(runs)
    table = render_table(summary, header)
    print("\n" + table)
    (args.out / "summary.json").write_text(json.dumps({"runs": runs, **summary}, indent=2))
    (args.out / "table.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
