"""Rolling restart on loopback: gateways (real ``loragate serve`` processes, remote mode)
behind a real HAProxy, restarted one at a time under streaming load.

Every request must either complete (its stream ends with a finish reason and
``[DONE]``) or be refused before it starts (an HTTP error status); none may be cut
mid-stream. HAProxy health-checks ``/ready`` (503 from the moment a gateway drains),
and retries a request that met a closed port or a 503 on the other gateway.

    python -m loadtests.rolling_restart --workers 8 --out loadtest-results/rolling-restart

starts a paced fake replica (``loadtests.paced_replica``), two gateways and HAProxy,
restarts each gateway once (SIGTERM, wait for exit 0, start, wait for ``/ready``) while
the workers stream, and prints the outcome counts. Blocking; the processes it starts
are its own and are stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtests.bench_serving import wait_ready
from loadtests.target import free_port

HAPROXY_CFG = """\
global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-request 30s
    # A request that met a closed port or a draining gateway's 503 goes to the other
    # one: it never started, so it is safe to send again.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503
    option http-buffer-request
frontend loragate
    bind 127.0.0.1:{port}
    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk
    http-check send meth GET uri /ready
    http-check expect status 200
    default-server check inter 250ms fall 1 rise 2
{servers}
"""


@dataclass
class GatewayProcess:
    """One ``loragate serve`` on a fixed loopback port (it keeps the port across restarts)."""

    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    exit_codes: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, timeout: float = 900) -> None:
        assert self.process is not None
        wait_ready(self.url + "/ready", self.process, timeout, interval=0.1)

    def stop(self, timeout: float = 180) -> int:
        """SIGTERM (drain), then wait for the exit; returns its code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.exit_codes.append(code)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def gateway_config(
    model_dir: Path, data_dir: Path, replica: str, port: int, drain: float
) -> dict[str, Any]:
    return {
        "model": {"path": str(model_dir), "name": "tiny-base"},
        "registry": {"data_dir": str(data_dir)},
        "engine": {"kind": "remote", "replicas": [replica], "health_interval": 0.5},
        "server": {"host": "127.0.0.1", "port": port, "drain_timeout": drain},
    }


@dataclass
class Rig:
    """The replica, the gateways and HAProxy, all on loopback."""

    workdir: Path
    model_dir: Path
    gateways: list[GatewayProcess] = field(default_factory=list)
    port: int = 0
    _others: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, count: int = 2, token_delay: float = 0.02, tokens: int = 20, drain: float = 20
    ) -> None:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
        replica_port = free_port()
        replica = subprocess.Popen(
            [
                *(sys.executable, "-m", "loadtests.paced_replica", "--port", str(replica_port)),
                *("--token-delay", str(token_delay), "--tokens", str(tokens)),
            ]
        )
        self._others.append(replica)
        wait_ready(f"http://127.0.0.1:{replica_port}/health", replica, 60, interval=0.1)
        for i in range(count):
            port = free_port()
            config = gateway_config(
                self.model_dir,
                self.workdir / f"registry-{i}",
                f"http://127.0.0.1:{replica_port}",
                port,
                drain,
            )
            path = self.workdir / f"gateway-{i}.yaml"
            path.write_text(yaml.safe_dump(config))
            self.gateways.append(GatewayProcess(path, port, self.workdir / f"gateway-{i}.log"))
        for g in self.gateways:
            g.start()
        for g in self.gateways:
            g.wait_ready()
        self.port = free_port()
        servers = "\n".join(
            f"    server g{i} 127.0.0.1:{g.port}" for i, g in enumerate(self.gateways)
        )
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(port=self.port, servers=servers))
        with (self.workdir / "haproxy.log").open("ab") as log:
            proxy = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdout=log, stderr=log)
        self._others.append(proxy)
        wait_ready(self.url + "/ready", proxy, 30, interval=0.1)

    def stop(self) -> None:
        for g in self.gateways:
            g.kill()
        for p in reversed(self._others):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


CHAT = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "stream": True}


async def one_request(client: httpx.AsyncClient, url: str) -> str:
    """``completed``, ``refused`` (an error status, nothing started) or ``cut``."""
    started = False
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=CHAT) as r:
            if r.status_code != 200:
                await r.aread()
                return "refused"
            started = True
            last: str | None = None
            finished = False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                last = line[6:]
                if last != "[DONE]":
                    event = json.loads(last)
                    if "error" in event:
                        return "cut"
                    finished = finished or any(
                        c.get("finish_reason") for c in event.get("choices", [])
                    )
            return "completed" if last == "[DONE]" and finished else "cut"
    except httpx.HTTPError:
        return "cut" if started else "refused"


async def stream_load(url: str, workers: int, stop: asyncio.Event) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:

        async def worker() -> None:
            while not stop.is_set():
                outcomes[await one_request(client, url)] += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return outcomes


async def rolling_restart(rig: Rig, workers: int, settle: float = 1.0) -> Counter[str]:
    """Stream through HAProxy while each gateway is restarted in turn."""
    stop = asyncio.Event()
    load = asyncio.create_task(stream_load(rig.url, workers, stop))
    await asyncio.sleep(settle)
    for g in rig.gateways:
        code = await asyncio.to_thread(g.stop)
        if code != 0:
            raise RuntimeError(f"gateway on {g.port} exited with {code}, not 0")
        g.start()
        await asyncio.to_thread(g.wait_ready)
        await asyncio.sleep(settle)  # HAProxy's rise: 2 checks
    stop.set()
    return await load


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="base model folder (default: the demo's)"
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("loadtest-results/rolling-restart"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.model_dir is None:
        from loadtests.run import demo_base_dir

        args.model_dir = demo_base_dir()
    rig = Rig(args.out, args.model_dir)
    try:
        rig.start()
        began = time.monotonic()
        outcomes = asyncio.run(rolling_restart(rig, args.workers))
    finally:
        rig.stop()
    lines = [
        "# Rolling restart: two gateways behind HAProxy, each restarted once under load",
        "",
        f"{args.workers} streaming workers for {time.monotonic() - began:.0f} s;"
        f" gateway exit codes {[g.exit_codes for g in rig.gateways]}.",
        "",
        "| completed | refused before start | cut mid-stream |",
        "|---|---|---|",
        f"| {outcomes['completed']} | {outcomes['refused']} | {outcomes['cut']} |",
    ]
    report = args.out / "rolling-restart.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(report.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
