"""Cold-start time to first token of an adapter loaded on first request, per tier.

One ``loragate serve`` (in-process vLLM engine, SmolLM2-135M-Instruct from the demo
kit, ``max_loras 1``, ``max_cpu_loras 1``) whose tenant ``bench`` has an S3 adapter
source: a moto S3 server on loopback holding ``--adapters`` random rank-8 adapters.
Streamed chat requests (8 tokens, temperature 0), one at a time, measure TTFT when the
adapter is:

- ``source``: in the bucket only (list + get, validate, register, engine load, prefill);
- ``disk``:   in the gateway's disk cache, out of the engine (the engine keeps one
  adapter: requesting another pushes the previous one out);
- ``resident``: in the engine (the same adapter again, at once);
- ``base``:  no adapter, for reference.

Every request has a prompt of its own, so none is helped by the engine's prefix cache.
The order is source for every adapter, then for every adapter: disk, resident, base. The
gateway's own per-tier counts (``/admin/adapters``) are printed to show each request
landed in the tier it is filed under.

    python -m loadtests.bench_cold_start [--adapters 6]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from adapters.tooling.random_lora import write_random_lora
from gateway.settings.keys import generate_key
from loadtests.bench_responses import demo_base
from loadtests.bench_serving import MODEL_ID, wait_ready
from loadtests.replica_process import exit_on_sigterm
from loadtests.target import free_port

BUCKET = "adapters"
ADMIN_KEY = "bench-admin-key-0123456789"
QUESTION = "Tell me about the sea."
SENT = 0


def cpu_name() -> str:
    """``lscpu``'s model name and whether the CPU has native bf16 (what ``dtype: auto``
    decides on: bf16 with avx512_bf16 or amx_bf16, float32 without)."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    name, flags = platform.processor() or "unknown CPU", ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            name = line.split(":", 1)[1].strip()
        if line.startswith("Flags:"):
            flags = line
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
    return f"{name} ({', '.join(bf16) or 'no native bf16'})"


def start_s3() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 call otherwise

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def upload(endpoint: str, folders: dict[str, Path]) -> None:
    import boto3

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    client.create_bucket(Bucket=BUCKET)
    for name, folder in folders.items():
        for path in folder.iterdir():
            client.put_object(
                Bucket=BUCKET, Key=f"bench/{name}/{path.name}", Body=path.read_bytes()
            )


def ttft(client: httpx.Client, key: str, model: str) -> float:
    global SENT
    SENT += 1  # a prompt of its own: no request finds its prefix in the engine's cache
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Request {SENT}. {QUESTION}"}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{model}: {response.status_code} {response.read()[:300]!r}")
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content":"' in line:
                return time.perf_counter() - started
    raise RuntimeError(f"{model}: no content in the stream")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=6)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    exit_on_sigterm()
    base = demo_base()
    key = generate_key()
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        work = Path(tmp)
        names = [f"cold{i}" for i in range(args.adapters)]
        folders = {n: write_random_lora(base, work / n, seed=i) for i, n in enumerate(names)}
        s3, endpoint = start_s3()
        upload(endpoint, folders)
        port = free_port()
        config = {
            "model": {"path": str(base), "name": MODEL_ID},
            "engine": {
                "dtype": args.dtype,
                "max_model_len": 1024,
                "max_loras": 1,
                "max_cpu_loras": 1,
                "max_lora_rank": 8,
                "kv_cache_gib": 1,
            },
            "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
            "registry": {"data_dir": str(work / "data")},
            "admin": {"api_key": ADMIN_KEY},
            "adapter_cache": {"sweep_seconds": 0.2},
            "tenants": {
                "bench": {
                    "keys": [{"id": key.key_id, "hash": key.hash}],
                    "models": [MODEL_ID],
                    "adapter_source": {
                        "kind": "s3",
                        "endpoint": endpoint,
                        "bucket": BUCKET,
                        "prefix": "bench/",
                        "access_key_env": "BENCH_S3_KEY",
                        "secret_key_env": "BENCH_S3_SECRET",
                    },
                }
            },
        }
        (work / "gateway.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "BENCH_S3_KEY": "bench", "BENCH_S3_SECRET": "bench"}
        log = work / "gateway.log"
        cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(work / "gateway.yaml")]
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url + "/ready", proc, timeout=900, log=log)
            load_before = os.getloadavg()
            times = run(url, key.key, names)
            with httpx.Client(base_url=url, timeout=60) as client:
                listing = client.get(
                    "/admin/adapters", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
                ).json()
            load_after = os.getloadavg()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            s3.stop()
    print(table(times))
    print()
    print(f"gateway's per-tier request counts: {listing['on_demand']['requests']}")
    print(
        f"# {time.strftime('%Y-%m-%d', time.gmtime())}; CPU: {cpu_name()}, "
        f"{os.cpu_count()} cores; engine dtype {args.dtype}; SmolLM2-135M-Instruct, "
        f"{args.adapters} random rank-8 adapters (q,k,v,o); moto S3 on loopback; "
        f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    return 0


def run(url: str, key: str, names: list[str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"base": [], "source": [], "disk": [], "resident": []}
    with httpx.Client(base_url=url, timeout=600) as client:
        ttft(client, key, MODEL_ID)  # warm-up: the engine's first prefill
        for name in names:
            times["source"].append(ttft(client, key, name))
        for name in names:
            times["disk"].append(ttft(client, key, name))
            time.sleep(0.5)  # one sweep: the gateway's residency snapshot catches up
            times["resident"].append(ttft(client, key, name))
            times["base"].append(ttft(client, key, MODEL_ID))
            time.sleep(0.5)
    return times


def table(times: dict[str, list[float]]) -> str:
    resident = statistics.median(times["resident"])
    rows = [
        "| tier | requests | TTFT p50 (ms) | TTFT max (ms) | p50 / resident |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for tier in ("source", "disk", "resident", "base"):
        values = times[tier]
        p50 = statistics.median(values)
        rows.append(
            f"| {tier} | {len(values)} | {p50 * 1000:.0f} | {max(values) * 1000:.0f} "
            f"| {p50 / resident:.2f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
