"""Benchmark 1: the gateway in remote mode vs the same vLLM OpenAI server directly.

One ``python -m vllm.entrypoints.openai.api_server`` replica (SmolLM2-135M-Instruct
from the demo kit, float32, its engine bound to core 0) is the only engine. vLLM's own
benchmark client (``vllm.benchmarks.serve``: random dataset, streamed
``/v1/completions`` with a text prompt and ``ignore_eos``) loads it directly and
through ``loragate serve`` in remote mode (pinned to the other core, tenancy on: the
client passes the tenant's key as ``OPENAI_API_KEY``), alternating the two round by
round (direct, gateway, then gateway, direct, ...) so drift on the shared machine hits
both alike. Prints a Markdown table: output tok/s and median TTFT per target, the
gateway/direct ratios (targets: throughput >= 0.97x, median TTFT <= 1.05x) and the
gateway's CPU time per request.

    python -m loadtests.bench_remote [--rounds 4] [--num-prompts 32] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtests.bench_serving import wait_ready
from loadtests.replica_process import ReplicaProcess, exit_on_sigterm
from loadtests.target import free_port

MODEL_ID = "smollm2-135m-instruct"
TARGET_TPS = 0.97
TARGET_TTFT = 1.05
SERVERS = ("direct", "gateway")


@dataclass(frozen=True)
class Load:
    """What vLLM's bench client sends in every run."""

    input_len: int = 128
    output_len: int = 64
    num_prompts: int = 32
    concurrency: int = 16


def client_command(
    base_url: str, model: str, tokenizer: Path, load: Load, result_dir: Path, result_file: str
) -> list[str]:
    """vLLM's bench client as a subprocess (it owns its event loop and stdout)."""
    return [
        sys.executable, "-c",
        "import sys; from vllm.benchmarks.serve import add_cli_args, main;"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser as P;"
        "p = P(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))",
        "--backend", "openai", "--endpoint", "/v1/completions",
        "--base-url", base_url, "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "random", "--random-input-len", str(load.input_len),
        "--random-output-len", str(load.output_len), "--num-prompts", str(load.num_prompts),
        "--max-concurrency", str(load.concurrency), "--ignore-eos", "--seed", "0",
        "--num-warmups", "2", "--save-result", "--result-dir", str(result_dir),
        "--result-filename", result_file, "--percentile-metrics", "ttft,tpot,e2el",
    ]  # fmt: skip


def round_order(index: int) -> tuple[str, str]:
    """Direct first in even rounds, the gateway first in odd ones (ABBA: a steady drift
    in machine load adds the same to both)."""
    return SERVERS if index % 2 == 0 else (SERVERS[1], SERVERS[0])


def gateway_config(
    base: Path, replica_url: str, port: int, data_dir: Path, key: tuple[str, str] | None
) -> dict[str, Any]:
    """The gateway's config file: remote mode over one replica; with ``key`` (its id and
    hash) one tenant holding that key (tenancy on), else open on loopback."""
    config: dict[str, Any] = {
        "model": {"path": str(base), "name": MODEL_ID},
        "engine": {"kind": "remote", "replicas": [replica_url], "max_loras": 2, "max_lora_rank": 8},
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "registry": {"data_dir": str(data_dir)},
    }
    if key is not None:
        config["tenants"] = {"bench": {"keys": [{"id": key[0], "hash": key[1]}], "models": ["*"]}}
    return config


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per server over the rounds, their ratios, and the per-round ratios."""
    out: dict[str, Any] = {}
    for server in SERVERS:
        mine = [r for r in rows if r["server"] == server]
        out[server] = {
            "output_tps": statistics.median(r["output_tps"] for r in mine),
            "median_ttft_ms": statistics.median(r["median_ttft_ms"] for r in mine),
            "median_tpot_ms": statistics.median(r["median_tpot_ms"] for r in mine),
            "failed": sum(r["failed"] for r in mine),
        }
    g, d = out["gateway"], out["direct"]
    out["tps_ratio"] = g["output_tps"] / d["output_tps"]
    out["ttft_ratio"] = g["median_ttft_ms"] / d["median_ttft_ms"]
    by = {(r["round"], r["server"]): r for r in rows}
    rounds = sorted({r["round"] for r in rows})
    out["round_tps_ratios"] = [
        by[(i, "gateway")]["output_tps"] / by[(i, "direct")]["output_tps"] for i in rounds
    ]
    out["round_ttft_ratios"] = [
        by[(i, "gateway")]["median_ttft_ms"] / by[(i, "direct")]["median_ttft_ms"] for i in rounds
    ]
    cpu = [r["gateway_cpu_ms_per_request"] for r in rows if r.get("gateway_cpu_ms_per_request")]
    out["gateway_cpu_ms_per_request"] = statistics.median(cpu) if cpu else None
    return out


def render_table(summary: dict[str, Any], load: Load, rounds: int, context: str) -> str:
    lines = [
        f"vllm.benchmarks.serve (completions, text prompt, ignore_eos), random "
        f"{load.input_len} in / {load.output_len} out, {load.num_prompts} prompts, "
        f"concurrency {load.concurrency}, {rounds} rounds; {context}",
        "",
        "| target | output tok/s (median) | median TTFT ms | median TPOT ms | failed |",
        "|---|---|---|---|---|",
    ]
    for server in SERVERS:
        s = summary[server]
        lines.append(
            f"| {server} | {s['output_tps']:.1f} | {s['median_ttft_ms']:.0f} "
            f"| {s['median_tpot_ms']:.1f} | {s['failed']} |"
        )
    tps, ttft = summary["tps_ratio"], summary["ttft_ratio"]
    lines.append(
        f"| **gateway / direct** | **{tps:.3f}x** (target >= {TARGET_TPS}: "
        f"{'met' if tps >= TARGET_TPS else 'MISSED'}) | **{ttft:.3f}x** (target <= "
        f"{TARGET_TTFT}: {'met' if ttft <= TARGET_TTFT else 'MISSED'}) | | |"
    )
    lines.append(
        "| per round | "
        + ", ".join(f"{x:.3f}" for x in summary["round_tps_ratios"])
        + " | "
        + ", ".join(f"{x:.3f}" for x in summary["round_ttft_ratios"])
        + " | | |"
    )
    cpu = summary.get("gateway_cpu_ms_per_request")
    if cpu is not None:
        lines.append(f"\nGateway process CPU time: {cpu:.1f} ms per request (median of rounds).")
    return "\n".join(lines)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(config: dict[str, Any], workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    """``loragate serve`` on the last core (the replica's engine has core 0)."""
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    core = (os.cpu_count() or 1) - 1
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)]
    return subprocess.Popen(
        cmd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--no-tenancy", action="store_true", help="open gateway, no API key")
    parser.add_argument("--out", type=Path, default=Path("bench-results/remote"))
    args = parser.parse_args()
    exit_on_sigterm()
    load = Load(args.input_len, args.output_len, args.num_prompts, args.concurrency)

    from adapters.tooling.demo_kit import ensure_demo_kit
    from gateway.settings.keys import generate_key

    base = ensure_demo_kit().base_dir
    args.out.mkdir(parents=True, exist_ok=True)
    key = None if args.no_tenancy else generate_key()
    client_env = {**os.environ, "VLLM_NO_USAGE_STATS": "1"}
    client_env.pop("OPENAI_API_KEY", None)
    if key is not None:
        client_env["OPENAI_API_KEY"] = key.key  # the direct replica ignores it
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        replica = ReplicaProcess(
            base,
            core=0,
            log=args.out / "replica.log",
            served_model_name=MODEL_ID,
            max_model_len=1024,
            max_loras=2,
            kv_cache_bytes=512 * 1024 * 1024,
            extra_args=["--disable-uvicorn-access-log"],
        )
        args.out.joinpath("replica.log").unlink(missing_ok=True)
        replica.start()
        stack.callback(replica.kill)
        replica.wait_ready()
        port = free_port()
        key_pair = (key.key_id, key.hash) if key else None
        config = gateway_config(base, replica.url, port, Path(tmp) / "data", key_pair)
        gateway = start_gateway(config, Path(tmp), args.out / "gateway.log")
        stack.callback(gateway.wait, 60)
        stack.callback(gateway.terminate)
        wait_ready(f"http://127.0.0.1:{port}/ready", gateway, 600, interval=0.5)
        urls = {"direct": replica.url, "gateway": f"http://127.0.0.1:{port}"}
        for r in range(args.rounds):
            for server in round_order(r):
                tag = f"{server}-{r}"
                cpu_before = cpu_seconds(gateway.pid)
                cmd = client_command(urls[server], MODEL_ID, base, load, args.out, f"{tag}.json")
                subprocess.run(
                    cmd, check=True, env=client_env, stdout=subprocess.DEVNULL, stderr=sys.stderr
                )
                cpu_ms = (cpu_seconds(gateway.pid) - cpu_before) * 1000
                res = json.loads((args.out / f"{tag}.json").read_text())
                requests = res["completed"] + res["failed"] + 2  # 2 warm-ups
                rows.append(
                    {
                        "round": r,
                        "server": server,
                        "failed": res["failed"],
                        "output_tps": res["output_throughput"],
                        "median_ttft_ms": res["median_ttft_ms"],
                        "median_tpot_ms": res["median_tpot_ms"],
                        "gateway_cpu_ms_per_request": cpu_ms / requests
                        if server == "gateway"
                        else None,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    load_after = os.getloadavg()
    summary = summarize(rows)
    context = (
        f"tenancy {'off' if key is None else 'on'}; load average (1 min) "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    table = render_table(summary, load, args.rounds, context)
    print("\n" + table)
    (args.out / "summary.json").write_text(json.dumps({"rows": rows, **summary}, indent=2))
    (args.out / "table.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
