"""Adapters against the base model through the gateway, for each CPU LoRA ops setting.

    python -m loadtests.bench_lora_gateway [--ops fused,vllm] [--rounds 2]
        [--num-prompts 32] [--concurrency 16] [--mixed-requests 48] [--max-loras 8]

For each ``--ops`` value one ``loragate serve`` runs (the demo base model, dtype auto,
eight random rank-8 q/k/v/o adapters ``t1``..``t8``; ``max_loras`` slots, 8 in CPU
memory) with ``LORAGATE_CPU_LORA_OPS`` set to it: ``fused`` (the default: grouped ops
and ``cpu_lora_linear``), ``ops-only`` (grouped ops under vLLM's ``add_lora_linear``),
``vllm`` (vLLM's own torch ops). Then:

1. Adapter vs base, same load: vLLM's bench client (random ``--input-len`` in /
   ``--output-len`` out, ``--num-prompts`` prompts, ``--concurrency``), base and ``t1``
   alternating, ``--rounds`` each; round ``r`` uses seed ``r`` for both, so the base and
   the adapter get the same prompts and neither finds them in the prefix cache (it is
   keyed per adapter). Output tok/s and median TTFT, and their adapter/base ratios.
2. Mixed load: ``--mixed-requests`` chat requests (``--output-len`` tokens,
   ``ignore_eos``, unique prompts) at ``--concurrency``, round robin over the base alone,
   the base + 2 adapters, and the base + 8 adapters; output tok/s and the ratio to the
   base alone, ``--rounds`` each, alternating order.

Prints both tables (medians over rounds) with the CPU, core count, dtype and load
average; writes ``summary.json`` to ``--out``.
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
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.engine.dtype import choose_dtype
from loadtests.bench_adapters import throughput, write_adapters
from loadtests.bench_serving import wait_ready
from loadtests.target import free_port

BASE_ID = "bench-base"
ADAPTERS = [f"t{i}" for i in range(1, 9)]
MIXES = {"base alone": 0, "base + 2 adapters": 2, "base + 8 adapters": 8}


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )  # fmt: skip
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"{model}, {os.cpu_count()} cores, dtype {choose_dtype('auto').dtype}, load {load}"


def start_gateway(
    base: Path, adapters: dict[str, Path], ops: str, workdir: Path, port: int, max_loras: int
) -> subprocess.Popen[bytes]:
    config = {
        "model": {"path": str(base), "name": BASE_ID},
        "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()],
        "engine": {
            "max_model_len": 2048,
            "max_loras": max_loras,
            "max_cpu_loras": len(adapters),
            "max_lora_rank": 8,
            "kv_cache_gib": 2,
        },
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "registry": {"data_dir": str(workdir / "registry")},
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "LORAGATE_CPU_LORA_OPS": ops, "VLLM_NO_USAGE_STATS": "1"}
    log = (workdir / "gateway.log").open("wb")
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def bench_client(
    url: str, model: str, tokenizer: Path, args: argparse.Namespace, seed: int, out: Path
) -> dict[str, Any]:
    """vLLM's own benchmark client, in a subprocess (it owns its event loop)."""
    result_file = f"{model}-{seed}.json"
    cmd = [
        sys.executable, "-c",
        "import sys; from vllm.benchmarks.serve import add_cli_args, main;"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser as P;"
        "p = P(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))",
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
        "--base-url", url, "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "random", "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
        "--max-concurrency", str(args.concurrency), "--ignore-eos", "--seed", str(seed),
        "--num-warmups", "2", "--save-result", "--result-dir", str(out),
        "--result-filename", result_file, "--percentile-metrics", "ttft,tpot",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    result: dict[str, Any] = json.loads((out / result_file).read_text())
    return result


def measure(
    ops: str, base: Path, adapters: dict[str, Path], args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    workdir = tmp / ops
    workdir.mkdir()
    port = free_port()
    proc = start_gateway(base, adapters, ops, workdir, port, args.max_loras)
    url = f"http://127.0.0.1:{port}"
    rows: dict[str, Any] = {"ops": ops, "client": [], "mixed": []}
    try:
        wait_ready(f"{url}/ready", proc, timeout=600, log=workdir / "gateway.log")
        for r in range(args.rounds):
            for model in (BASE_ID, "t1") if r % 2 == 0 else ("t1", BASE_ID):
                res = bench_client(url, model, base, args, r, workdir)
                row = {
                    "round": r,
                    "model": "base" if model == BASE_ID else "adapter",
                    "failed": res["failed"],
                    "output_tps": res["output_throughput"],
                    "median_ttft_ms": res["median_ttft_ms"],
                    "load": machine().rsplit("load ", 1)[1],
                }
                rows["client"].append(row)
                print(json.dumps({"ops": ops, **row}), flush=True)
        mixed_args = argparse.Namespace(
            requests=args.mixed_requests, concurrency=args.concurrency, max_tokens=args.output_len
        )
        for r in range(args.rounds):
            for name in list(MIXES) if r % 2 == 0 else list(MIXES)[::-1]:
                models = [BASE_ID, *ADAPTERS[: MIXES[name]]]
                rate = asyncio.run(mixed_rate(url, models, mixed_args))
                rows["mixed"].append({"round": r, "mix": name, "output_tps": rate})
                print(json.dumps({"ops": ops, **rows["mixed"][-1]}), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    return rows


async def mixed_rate(url: str, models: list[str], args: argparse.Namespace) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False) as client:
        return await throughput(client, models, args)


def med(rows: list[dict[str, Any]], key: str, **match: Any) -> float:
    return statistics.median(r[key] for r in rows if all(r[k] == v for k, v in match.items()))


def print_tables(results: list[dict[str, Any]], args: argparse.Namespace, where: str) -> None:
    print(f"\n{where}\n")
    print(
        f"vLLM's bench client, random {args.input_len} in / {args.output_len} out, "
        f"{args.num_prompts} prompts, concurrency {args.concurrency}, median of "
        f"{args.rounds} rounds\n"
    )
    print(
        "| ops | base tok/s | adapter tok/s | adapter / base | base TTFT ms "
        "| adapter TTFT ms | adapter / base TTFT |"
    )
    print("|---|---|---|---|---|---|---|")
    for res in results:
        c = res["client"]
        b_tps, a_tps = med(c, "output_tps", model="base"), med(c, "output_tps", model="adapter")
        b_ttft = med(c, "median_ttft_ms", model="base")
        a_ttft = med(c, "median_ttft_ms", model="adapter")
        print(
            f"| {res['ops']} | {b_tps:.1f} | {a_tps:.1f} | {a_tps / b_tps:.2f}x | {b_ttft:,.0f} "
            f"| {a_ttft:,.0f} | {a_ttft / b_ttft:.2f}x |"
        )
    print(
        f"\nMixed load, round robin, {args.mixed_requests} requests x {args.output_len} "
        f"tokens, concurrency {args.concurrency}, max_loras {args.max_loras}: output tok/s "
        "(ratio to the base alone)\n"
    )
    print("| ops | " + " | ".join(MIXES) + " |")
    print("|---|" + "---|" * len(MIXES))
    for res in results:
        alone = med(res["mixed"], "output_tps", mix="base alone")
        cells = [
            f"{(rate := med(res['mixed'], 'output_tps', mix=name)):.1f} ({rate / alone:.2f}x)"
            for name in MIXES
        ]
        print(f"| {res['ops']} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="fused,vllm", help="LORAGATE_CPU_LORA_OPS values")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--mixed-requests", type=int, default=48)
    parser.add_argument("--max-loras", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench-results/lora-gateway"))
    args = parser.parse_args()

    from adapters.tooling.demo_kit import ensure_demo_kit

    base = ensure_demo_kit().base_dir
    args.out.mkdir(parents=True, exist_ok=True)
    start = machine()
    with tempfile.TemporaryDirectory() as tmp:
        adapters = write_adapters(base, Path(tmp) / "adapters", ADAPTERS, first_seed=1)
        results = [measure(ops, base, adapters, args, Path(tmp)) for ops in args.ops.split(",")]
    where = f"Machine: {start} at the start; {machine().rsplit(', ', 1)[1]} at the end"
    print_tables(results, args, where)
    (args.out / "summary.json").write_text(
        json.dumps({"machine": where, "runs": results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
