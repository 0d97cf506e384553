"""Budget precision: tokens served past a budget when 32 requests race for it on two
gateways sharing one Redis. Prints a Markdown table.

    python -m loadtests.bench_budget [--repeat 3] [--concurrency 32]

Two ``loragate serve`` processes (``engine.kind: remote``) stand in front of one instant
backend (``loadtests.instant_backend``: every answer has ``max_tokens`` tokens, at most
64) with ``limits_store.kind: redis`` on a ``redis-server`` this script starts. Each
round gives a fresh tenant a daily budget and sends ``--concurrency`` chat completions
at once, alternating between the gateways, then counts what was served (the answers'
``usage.total_tokens``, or their cost at the configured prices) and what was refused
(429 ``insufficient_quota``). *Past budget* is served minus budget when positive: the
gateways reserve a request's prompt plus its ``max_tokens`` before the engine, so the
target is 0. A round whose ``max_tokens`` is above the backend's 64 uses less than it
reserved: the rest is refunded at settlement. The load average goes with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from gateway.settings.keys import NewKey, generate_key
from loadtests.bench_serving import wait_ready
from loadtests.instant_backend import MODEL
from loadtests.target import free_port

HOST = "127.0.0.1"
PRICES = {"input": 10.0, "output": 30.0}  # per million tokens: round figures to check by hand


@dataclass(frozen=True)
class Round:
    """One budget and the completion budget every request of the round asks for."""

    max_tokens: int | None
    max_cost: float | None
    request_max_tokens: int

    @property
    def label(self) -> str:
        return f"{self.max_tokens} tokens" if self.max_tokens is not None else f"${self.max_cost}"


ROUNDS = (
    Round(300, None, 16),
    Round(1000, None, 32),
    Round(3000, None, 64),
    Round(1000, None, 100),  # answers stop at 64: 36 reserved tokens refunded each
    Round(None, 0.02, 32),
)


@dataclass
class Outcome:
    served: int = 0
    refused: int = 0
    other: int = 0
    tokens: int = 0
    cost: float = 0.0
    reservation: int = 0


@contextmanager
def started(
    cmd: list[str], log: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_redis(stack: ExitStack, work: Path) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found (Debian: apt-get install redis-server)")
    port = free_port()
    cmd = [exe, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    stack.enter_context(started([*cmd, "--dir", str(work)], work / "redis.log"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if redis.Redis(host=HOST, port=port, socket_timeout=1).ping():
                return f"redis://{HOST}:{port}/0"
        except redis.RedisError:  # refused while it starts
            time.sleep(0.1)
    raise SystemExit("redis-server did not answer PING")


def gateway_config(
    backend_port: int,
    port: int,
    redis_url: str,
    model_dir: Path,
    work: Path,
    rounds: list[tuple[str, Round, NewKey]],
) -> Path:
    """One tenant per round (its own key and budget); the same file for both gateways
    but for the port and the data folder."""
    tenants: dict[str, Any] = {}
    for name, rnd, pair in rounds:
        budget = {"period": "day", "max_tokens": rnd.max_tokens, "max_cost": rnd.max_cost}
        tenants[name] = {
            "keys": [{"id": pair.key_id, "hash": pair.hash}],
            "models": [MODEL],
            "budget": budget,
        }
    config = {
        "model": {"path": str(model_dir), "name": MODEL},
        "engine": {"kind": "remote", "replicas": [f"http://{HOST}:{backend_port}"]},
        "server": {"host": HOST, "port": port, "log_level": "warning"},
        "registry": {"data_dir": str(work / f"data-{port}")},
        "limits_store": {
            "kind": "redis",
            "url": redis_url,
            "key_prefix": "bench-budget:",
            "timeout": 5,  # 64 connections opening at once on a loaded machine
        },
        "pricing": {"models": {MODEL: PRICES}},
        "tenants": tenants,
    }
    path = work / f"loragate-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def run_round(ports: list[int], key: str, rnd: Round, concurrency: int) -> Outcome:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "How much does this cost?"}],
        "max_tokens": rnd.request_max_tokens,
    }
    headers = {"Authorization": f"Bearer {key}"}
    outcome = Outcome()
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(i: int) -> None:
            url = f"http://{HOST}:{ports[i % len(ports)]}/v1/chat/completions"
            r = await client.post(url, json=body, headers=headers)
            if r.status_code == 200:
                usage = r.json()["usage"]
                outcome.served += 1
                outcome.tokens += usage["total_tokens"]
                outcome.cost += (
                    usage["prompt_tokens"] * PRICES["input"]
                    + usage["completion_tokens"] * PRICES["output"]
                ) / 1e6
                outcome.reservation = usage["prompt_tokens"] + rnd.request_max_tokens
            elif r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota":
                outcome.refused += 1
            else:
                outcome.other += 1
                print(f"unexpected answer {r.status_code}: {r.text[:200]}", file=sys.stderr)

        await asyncio.gather(*(one(i) for i in range(concurrency)))
    return outcome


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per budget")
    parser.add_argument("--model", type=Path, help="tokenizer folder (default: tests' tiny model)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rounds = [
        (f"r{i}-{j}", rnd, generate_key())
        for i, rnd in enumerate(ROUNDS)
        for j in range(args.repeat)
    ]
    results: list[tuple[Round, Outcome]] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-budget-")))
        redis_url = start_redis(stack, work)
        backend_port = free_port()
        backend_log = work / "backend.log"
        cmd = [sys.executable, "-m", "loadtests.instant_backend", "--port", str(backend_port)]
        backend = stack.enter_context(started(cmd, backend_log))
        wait_ready(
            f"http://{HOST}:{backend_port}/health", backend, 60, interval=0.3, log=backend_log
        )
        model_dir = args.model or _tiny_model()
        ports = []
        for _ in range(2):
            port = free_port()
            config = gateway_config(backend_port, port, redis_url, model_dir, work, rounds)
            log = work / f"loragate-{port}.log"
            serve = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
            proc = stack.enter_context(started(serve, log))
            wait_ready(f"http://{HOST}:{port}/ready", proc, 300, interval=0.3, log=log)
            ports.append(port)
        for _, rnd, pair in rounds:
            outcome = asyncio.run(run_round(ports, pair.key, rnd, args.concurrency))
            results.append((rnd, outcome))
    print_table(results, args, load_before, os.getloadavg())
    return 1 if any(o.other or not o.served for _, o in results) else 0


def print_table(
    results: list[tuple[Round, Outcome]],
    args: argparse.Namespace,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
) -> None:
    print(
        f"{args.concurrency} concurrent chat completions per round on 2 gateways (remote mode, "
        f"one Redis), instant backend; CPU: {cpu_name()}, {os.cpu_count()} cores; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after."
    )
    print()
    print(
        "| budget | max_tokens | reservation/request | served | refused (insufficient_quota) "
        "| tokens served | cost served | past budget |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for rnd, o in results:
        if rnd.max_tokens is not None:
            past = f"{max(0, o.tokens - rnd.max_tokens)} tokens"
        else:
            assert rnd.max_cost is not None
            past = f"${max(0.0, o.cost - rnd.max_cost):.6f}"
        print(
            f"| {rnd.label} | {rnd.request_max_tokens} | {o.reservation} tokens | {o.served} "
            f"| {o.refused} | {o.tokens} | ${o.cost:.6f} | {past} |"
        )


def _tiny_model() -> Path:
    from tests.support.modelkit import tiny_llama_dir  # the tests' tokenizer + config folder

    return tiny_llama_dir()


if __name__ == "__main__":
    sys.exit(main())
