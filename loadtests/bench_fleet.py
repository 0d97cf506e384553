"""An adapter fleet loaded on first request: loragate (in-process, remote) vs vLLM's resolver.

``--adapters`` random adapters (ranks 8-16 drawn per adapter, seeded; q_proj and v_proj,
bfloat16 weights) for SmolLM2-135M-Instruct (the demo kit's base) are written as folders
and uploaded to a bucket on a moto S3 server on loopback (a child process), under the
prefix of the tenant ``bench``. One seeded request sequence (``fleet_workload``: Zipf
s = 1.0 over the adapters, token-id prompts, fixed output length, ``ignore_eos``) is
replayed at a fixed concurrency against each system, one system at a time:

- ``inprocess``: ``loragate serve``, in-process vLLM engine (its OpenMP threads on core
  0), tenant ``adapter_source`` = the bucket;
- ``remote``: ``loragate serve`` in remote mode over two ``vllm serve`` replicas (cores 0
  and 1), the same tenant source; replicas load from the gateway's disk cache (the path
  they share);
- ``vllm``: vLLM's own OpenAI server (core 0) with its filesystem LoRA resolver plugin
  over the adapter folders (``VLLM_PLUGINS=lora_filesystem_resolver``,
  ``VLLM_LORA_RESOLVER_CACHE_DIR``), runtime LoRA updating on.

Every engine has the same settings (dtype, ``max_loras``, ``max_cpu_loras``,
``max_lora_rank 16``, KV cache, eager mode, seed). Each system first serves the sequence
with every request on the base model (the reference), then ``--rounds`` times with the
adapters: round 1 finds every adapter in the bucket (vLLM: in its folder, not yet
loaded), later rounds find them in the gateway's disk cache (vLLM: registered, loaded
again from the folder when out of its CPU cache). "Cold" requests are the first request
of each adapter in a round. Adapter loads come from the servers: the gateway's per-tier
counts (``/admin/adapters``), vLLM's "Resolved and loaded LoRA adapter" log lines.

    python -m loadtests.bench_fleet [--adapters 1000] [--requests 300] [--concurrency 8]
        [--systems inprocess,remote,vllm] [--rounds 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from adapters.tooling.random_lora import write_random_fleet
from loadtests.bench_cold_start import cpu_name
from loadtests.bench_serving import MODEL_ID, wait_ready
from loadtests.fleet_report import RunRow, render
from loadtests.fleet_workload import Workload, replay, zipf_workload
from loadtests.replica_process import ReplicaProcess, exit_on_sigterm
from loadtests.target import free_port

SYSTEMS = ("inprocess", "remote", "vllm")
BUCKET = "fleet"
PREFIX = "tenants/bench/"
ADMIN_KEY = "fleet-admin-key-0123456789"
S3_ENV = {"BENCH_S3_KEY": "bench", "BENCH_S3_SECRET": "bench"}
RESOLVED_LINE = "Resolved and loaded LoRA adapter"


def start_s3(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server in a child process (its threads stay off the client's GIL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    wait_ready(endpoint + "/moto-api/", proc, timeout=120, interval=0.3, log=log)
    return proc, endpoint


def upload(endpoint: str, root: Path, names: list[str]) -> int:
    """Every adapter's files under ``PREFIX<name>/``; returns the bytes uploaded."""
    import boto3

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    client.create_bucket(Bucket=BUCKET)
    files = [p for name in names for p in sorted((root / name).iterdir())]

    def put(path: Path) -> int:
        body = path.read_bytes()
        key = f"{PREFIX}{path.parent.name}/{path.name}"
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        return len(body)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return sum(pool.map(put, files))


def engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_loras": args.max_loras,
        "max_cpu_loras": args.max_cpu_loras,
        "max_lora_rank": 16,
    }


LoadCounter = Callable[[], dict[str, float]]
"""Loads so far, by kind (``source``: adapters brought in from the bucket or folder)."""


@dataclass(frozen=True)
class Context:
    """What every system's run needs."""

    args: argparse.Namespace
    base: Path
    work: Path
    fleet_dir: Path
    s3: str
    dtype: str
    engine: dict[str, Any]
    key: Any
    workload: Workload


def gateway_config(
    base: Path, work: Path, engine: dict[str, Any], s3: str, key: Any
) -> dict[str, Any]:
    return {
        "model": {"path": str(base), "name": MODEL_ID},
        "engine": engine,
        "server": {"host": "127.0.0.1", "port": free_port(), "log_level": "warning"},
        "registry": {"data_dir": str(work / "registry")},
        "admin": {"api_key": ADMIN_KEY},
        "adapter_cache": {"sweep_seconds": 0.5},
        "tenants": {
            "bench": {
                "keys": [{"id": key.key_id, "hash": key.hash}],
                "models": [MODEL_ID],
                "adapter_source": {
                    "kind": "s3",
                    "endpoint": s3,
                    "bucket": BUCKET,
                    "prefix": PREFIX,
                    "access_key_env": "BENCH_S3_KEY",
                    "secret_key_env": "BENCH_S3_SECRET",
                },
            }
        },
    }


def start_gateway(config: dict[str, Any], work: Path, env: dict[str, str]) -> tuple[Any, str]:
    work.mkdir(parents=True, exist_ok=True)
    path = work / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    log = work / "gateway.log"
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)]
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **env}
    )
    url = f"http://127.0.0.1:{config['server']['port']}"
    wait_ready(url + "/ready", proc, timeout=900, log=log)
    return proc, url


def tier_counts(url: str) -> dict[str, int]:
    """The gateway's on-demand requests per tier (``/admin/adapters``)."""
    answer = httpx.get(
        url + "/admin/adapters",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
        trust_env=False,
    )
    answer.raise_for_status()
    return dict(answer.json()["on_demand"]["requests"])


def fetch_counts(url: str) -> dict[str, float]:
    """From ``/metrics``: adapters fetched from the source (``source``: lookups that found
    the adapter) and ``loragate_adapter_fetch_seconds``' sum and count."""
    text = httpx.get(
        url + "/metrics",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
        trust_env=False,
    ).text
    wanted = {
        'loragate_adapter_source_lookups_total{result="held"}': "source",
        "loragate_adapter_fetch_seconds_sum": "fetch_s",
        "loragate_adapter_fetch_seconds_count": "fetches",
    }
    out = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series in wanted:
            out[wanted[series]] = float(value)
    return out


def measure(
    system: str,
    url: str,
    key: str | None,
    workload: Workload,
    args: argparse.Namespace,
    loads: LoadCounter,
) -> list[RunRow]:
    """The base reference, then ``args.rounds`` rounds with the adapters."""
    warm_up = Workload([MODEL_ID] * 4, workload.prompts[:4], workload.output_len)
    replay(url, key, warm_up, 4)  # the engine's first steps count for nobody
    base = replay(url, key, workload.on_base(MODEL_ID), args.concurrency)
    rows = [RunRow.of(system, "base", 0, base, set(), {})]
    print(rows[-1].line(), flush=True)
    first = workload.first_requests()
    for round_ in range(1, args.rounds + 1):
        before = loads()
        result = replay(url, key, workload, args.concurrency)
        after = loads()
        delta = {k: v - before.get(k, 0) for k, v in after.items()}
        rows.append(RunRow.of(system, "adapters", round_, result, first, delta))
        print(rows[-1].line(), flush=True)
    return rows


def gateway_loads(url: str) -> LoadCounter:
    def count() -> dict[str, float]:
        tiers = {f"tier:{k}": float(v) for k, v in tier_counts(url).items()}
        return {**tiers, **fetch_counts(url)}

    return count


def run_inprocess(ctx: Context) -> list[RunRow]:
    engine = {
        **ctx.engine,
        "dtype": ctx.dtype,
        "max_model_len": 512,
        "kv_cache_gib": 1,
        "enforce_eager": True,
    }
    work = ctx.work / "inprocess"
    config = gateway_config(ctx.base, work, engine, ctx.s3, ctx.key)
    env = {**S3_ENV, "VLLM_CPU_OMP_THREADS_BIND": "0", "VLLM_NO_USAGE_STATS": "1"}
    with ExitStack() as stack:
        proc, url = start_gateway(config, work, env)
        stack.callback(stop, proc)
        return measure(
            "loragate in-process", url, ctx.key.key, ctx.workload, ctx.args, gateway_loads(url)
        )


def replica(
    ctx: Context, core: int, log: Path, env: dict[str, str] | None = None
) -> ReplicaProcess:
    return ReplicaProcess(
        ctx.base,
        core=core,
        log=log,
        served_model_name=MODEL_ID,
        max_model_len=512,
        max_loras=ctx.engine["max_loras"],
        max_cpu_loras=ctx.engine["max_cpu_loras"],
        max_lora_rank=16,
        kv_cache_bytes=1024**3,
        dtype=ctx.dtype,
        env=env or {},
        extra_args=["--disable-uvicorn-access-log"],
    )


def run_remote(ctx: Context) -> list[RunRow]:
    work = ctx.work / "remote"
    work.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        pair = [replica(ctx, core, work / f"replica{core}.log") for core in (0, 1)]
        for r in pair:
            r.start()
            stack.callback(r.kill)
        for r in pair:
            r.wait_ready()
        engine = {
            **ctx.engine,
            "kind": "remote",
            "replicas": [r.url for r in pair],
            "first_token_timeout": 600,
            "health_interval": 2,
        }
        config = gateway_config(ctx.base, work, engine, ctx.s3, ctx.key)
        proc, url = start_gateway(config, work, S3_ENV)
        stack.callback(stop, proc)
        return measure(
            "loragate remote x2", url, ctx.key.key, ctx.workload, ctx.args, gateway_loads(url)
        )


def run_vllm(ctx: Context) -> list[RunRow]:
    work = ctx.work / "vllm"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        "VLLM_PLUGINS": "lora_filesystem_resolver,loragate_platform_fixes",
        "VLLM_LORA_RESOLVER_CACHE_DIR": str(ctx.fleet_dir),
    }
    server = replica(ctx, 0, work / "vllm.log", env)

    def count() -> dict[str, float]:
        text = server.log.read_text(errors="replace")
        return {"source": float(text.count(RESOLVED_LINE))}

    with ExitStack() as stack:
        server.start()
        stack.callback(server.kill)
        server.wait_ready()
        return measure("vllm serve + fs resolver", server.url, None, ctx.workload, ctx.args, count)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


RUNNERS: dict[str, Callable[[Context], list[RunRow]]] = {
    "inprocess": run_inprocess,
    "remote": run_remote,
    "vllm": run_vllm,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--max-loras", type=int, default=4)
    parser.add_argument("--max-cpu-loras", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench-results/fleet"))
    args = parser.parse_args()
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {SYSTEMS}")
    return args


def main() -> int:
    args = parse_args()
    exit_on_sigterm()
    from gateway.engine.dtype import choose_dtype
    from gateway.settings.keys import generate_key
    from loadtests.bench_responses import demo_base

    base = demo_base()
    dtype = choose_dtype(args.dtype).dtype
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[RunRow] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        started = time.perf_counter()
        fleet = write_random_fleet(base, work / "fleet", args.adapters, seed=args.seed)
        s3_proc, s3 = start_s3(work / "s3.log")
        stack.callback(stop, s3_proc)
        names = list(fleet)
        size = upload(s3, work / "fleet", names)
        print(
            f"fleet: {len(fleet)} adapters, ranks {min(fleet.values())}-{max(fleet.values())}, "
            f"{size / 2**20:.0f} MiB in the bucket; written and uploaded in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        workload = zipf_workload(
            names,
            args.requests,
            seed=args.seed,
            input_len=args.input_len,
            output_len=args.output_len,
        )
        ctx = Context(
            args,
            base,
            work,
            work / "fleet",
            s3,
            dtype,
            engine_settings(args),
            generate_key(),
            workload,
        )
        load_before = os.getloadavg()
        for system in args.systems.split(","):
            rows += RUNNERS[system](ctx)
        load_after = os.getloadavg()
    header = (
        f"# bench_fleet {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; CPU: {cpu_name()}, "
        f"{os.cpu_count()} cores; dtype {dtype}; SmolLM2-135M-Instruct; {args.adapters} adapters "
        f"(q_proj,v_proj, bf16 files, ranks 8-16, {size / 2**20:.0f} MiB); {args.requests} "
        f"requests Zipf s=1.0 over them ({len(set(workload.models))} distinct), seed {args.seed}, "
        f"{args.input_len} in / {args.output_len} out, concurrency {args.concurrency}; "
        f"max_loras {args.max_loras}, max_cpu_loras {args.max_cpu_loras}, max_lora_rank 16; "
        f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    table = render(rows)
    print("\n" + header + "\n\n" + table)
    (args.out / "table.md").write_text(header + "\n\n" + table + "\n")
    (args.out / "rows.json").write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
