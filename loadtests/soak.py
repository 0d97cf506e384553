"""Soak benchmark (not a test): the demo kit's gateway in remote mode, in front of a paced
fake replica, under mixed traffic for a long time; does anything grow or drift?

    python -m loadtests.soak [--minutes 30] [--window-minutes 5] [--out DIR]

The gateway is a real ``loragate serve`` process with the demo's config (two tenants,
their adapters and aliases, RAG collections with the real embedder, the admin key),
its engine switched to ``kind: remote`` against ``loadtests.paced_replica`` (a reply of
``--tokens`` tokens at ``--token-delay`` s each, whatever the load). The traffic, one
asyncio client per role, all the time:

- ``acme-stream``/``globex-stream``: streamed chats through each tenant's alias (its
  adapter, its locked prompts, RAG with citations);
- ``acme-adapter``/``globex-base``: plain chats to the pirate adapter and to the base
  model, not streamed;
- ``cancel``: streamed chats closed after the first event (the engine request aborted);
- ``stall``: every ``--stall-every`` seconds another streamed chat whose client reads
  nothing and keeps its connection open to the end of the run.

Every ``--sample-seconds`` the gateway's RSS and open file descriptors are read
(psutil). The table: the slope of each (least squares, after the first window, per
hour), answers by status (429 and 503 are the gateway's expected refusals, anything
else is an error, as is a stream that ends in an error event or without ``[DONE]``),
and latency p50/p99 of the streamed chats in the first and the last window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from loadtests.paced_target import start_paced_replica
from loadtests.scenario import PacedTarget
from loadtests.target import ServerProcess, free_port

EXPECTED = {200, 429, 503}


@dataclass
class Outcome:
    role: str
    started: float
    seconds: float
    status: int
    error: str | None = None


@dataclass
class Recorder:
    t0: float = field(default_factory=time.monotonic)
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    """(seconds since start, RSS MiB, open fds)."""

    def add(self, role: str, started: float, status: int, error: str | None = None) -> None:
        now = time.monotonic()
        self.outcomes.append(Outcome(role, started - self.t0, now - started, status, error))


def chat(model: str, text: str, stream: bool, max_tokens: int = 32) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def streamed(
    client: httpx.AsyncClient, rec: Recorder, role: str, key: str, body: dict[str, Any]
) -> None:
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                await r.aread()
                rec.add(role, started, r.status_code)
                return
            done = False
            error = None
            async for line in r.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: ") and '"error"' in line[:20]:
                    error = line[6:200]
            rec.add(role, started, 200, error or (None if done else "no [DONE]"))
    except httpx.HTTPError as exc:
        rec.add(role, started, 0, type(exc).__name__)


async def unstreamed(
    client: httpx.AsyncClient, rec: Recorder, role: str, key: str, body: dict[str, Any]
) -> None:
    started = time.monotonic()
    try:
        r = await client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        error = None
        if r.status_code == 200 and not r.json().get("choices"):
            error = "no choices"
        rec.add(role, started, r.status_code, error)
    except httpx.HTTPError as exc:
        rec.add(role, started, 0, type(exc).__name__)


async def cancelled(client: httpx.AsyncClient, rec: Recorder, key: str, model: str) -> None:
    started = time.monotonic()
    body = chat(model, "Tell me a long story.", stream=True, max_tokens=200)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code == 200:
                async for _ in r.aiter_lines():
                    break  # the first event, then the client leaves
            else:
                await r.aread()
            rec.add("cancel", started, r.status_code)
    except httpx.HTTPError as exc:
        rec.add("cancel", started, 0, type(exc).__name__)


async def stalled_readers(
    url: str, rec: Recorder, key: str, model: str, end: float, every: float
) -> None:
    """Every ``every`` seconds a streamed chat whose client never reads a byte and never
    closes its connection (until the end of the run): the gateway must not keep a file
    descriptor, a buffer or an engine slot per such client for longer than its limits."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(chat(model, "Write a very long answer.", stream=True, max_tokens=384))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    opened: list[socket.socket] = []
    try:
        while time.monotonic() < end:
            started = time.monotonic()
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            sock.sendall(head.encode() + body.encode())
            opened.append(sock)
            rec.add("stall", started, 200)
            await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))
    finally:
        for sock in opened:
            sock.close()


async def loop_role(end: float, pause: float, make: Any) -> None:
    while time.monotonic() < end:
        await make()
        await asyncio.sleep(pause)


async def sample(pid: int, rec: Recorder, end: float, every: float) -> None:
    process = psutil.Process(pid)
    while time.monotonic() < end:
        try:
            rss = process.memory_info().rss / 2**20
            fds = process.num_fds()
        except psutil.Error:
            return
        rec.samples.append((time.monotonic() - rec.t0, rss, fds))
        await asyncio.sleep(every)


async def drive(url: str, keys: dict[str, str], pid: int, args: argparse.Namespace) -> Recorder:
    rec = Recorder()
    end = rec.t0 + args.minutes * 60
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        acme, globex = keys["acme"], keys["globex"]
        roles = [
            loop_role(
                end,
                0.5,
                lambda: streamed(
                    client, rec, "acme-stream", acme, chat("support-bot", "How do I descale?", True)
                ),
            ),
            loop_role(
                end,
                1.0,
                lambda: streamed(
                    client, rec, "globex-stream", globex, chat("helpdesk", "Reset the R7?", True)
                ),
            ),
            loop_role(
                end,
                1.0,
                lambda: unstreamed(
                    client, rec, "acme-adapter", acme, chat("pirate", "Hello there", False)
                ),
            ),
            loop_role(
                end,
                1.5,
                lambda: unstreamed(
                    client, rec, "globex-base", globex, chat(args.base, "Hi", False, 16)
                ),
            ),
            loop_role(end, 2.0, lambda: cancelled(client, rec, acme, "pirate")),
            stalled_readers(url, rec, globex, args.base, end, args.stall_every),
            sample(pid, rec, end, args.sample_seconds),
        ]
        await asyncio.gather(*roles)
    return rec


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return float("nan")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return (
        3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(rec: Recorder, args: argparse.Namespace) -> str:
    window = args.window_minutes * 60
    total = args.minutes * 60
    lines = [
        f"# soak: {args.minutes:g} min, windows of {args.window_minutes:g} min; CPU: "
        f"{cpu_name()}, {os.cpu_count()} cores; replica: {args.tokens} tokens x "
        f"{args.token_delay} s; load average at the end {os.getloadavg()}",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    steady = [s for s in rec.samples if s[0] >= window] or rec.samples
    rss = [s[1] for s in rec.samples]
    fds = [s[2] for s in rec.samples]
    if rss:
        lines.append(
            f"| RSS MiB first / last / max | {rss[0]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} |"
        )
        lines.append(f"| open fds first / last / max | {fds[0]} / {fds[-1]} / {max(fds)} |")
    lines.append(
        f"| RSS slope after the first window (MiB/h) | "
        f"{slope_per_hour([(s[0], s[1]) for s in steady]):.1f} |"
    )
    lines.append(
        f"| fd slope after the first window (fds/h) | "
        f"{slope_per_hour([(s[0], float(s[2])) for s in steady]):.1f} |"
    )
    statuses = Counter(o.status for o in rec.outcomes)
    lines.append(
        "| answers by status | "
        + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        + " |"
    )
    errors = [o for o in rec.outcomes if o.status not in EXPECTED or o.error]
    kinds = Counter(f"{o.role} {o.status} {o.error or ''}".strip() for o in errors)
    lines.append(f"| errors (outside 429/503) | {len(errors)} {dict(kinds) if kinds else ''} |")
    for role in ("acme-stream", "globex-stream"):
        ok = [o for o in rec.outcomes if o.role == role and o.status == 200 and not o.error]
        first = [o.seconds for o in ok if o.started < window]
        last = [o.seconds for o in ok if o.started >= total - window]
        lines.append(
            f"| {role} p50 / p99 s, first window (n={len(first)}) | "
            f"{percentile(first, 0.5):.2f} / {percentile(first, 0.99):.2f} |"
        )
        lines.append(
            f"| {role} p50 / p99 s, last window (n={len(last)}) | "
            f"{percentile(last, 0.5):.2f} / {percentile(last, 0.99):.2f} |"
        )
    stalls = sum(1 for o in rec.outcomes if o.role == "stall")
    lines.append(f"| streams never read, their sockets kept open to the end | {stalls} |")
    return "\n".join(lines)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def soak_config(out: Path, replica_url: str) -> tuple[Path, dict[str, str], str]:
    """The demo's config in remote mode; its tenants' keys; the base model's id."""
    from gateway.demo.runner import prepare_demo

    _, keys, demo_config_path = prepare_demo(None, {"host": "127.0.0.1"}, progress=False)
    config = yaml.safe_load(demo_config_path.read_text(encoding="utf-8"))
    config["engine"] = {"kind": "remote", "replicas": [replica_url], "health_interval": 1}
    config["registry"]["data_dir"] = str(out / "registry")
    config["server"] = {"host": "127.0.0.1", "log_level": "warning"}
    config["limits"] = {"client_stall_seconds": 30}
    path = out / "soak-config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path, {"acme": keys.key("acme"), "globex": keys.key("globex")}, config["model"]["name"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--window-minutes", type=float, default=5.0)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--stall-every", type=float, default=30.0, help="a new unread stream")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--token-delay", type=float, default=0.02)
    parser.add_argument("--out", type=Path, default=Path("bench-results/soak"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    paced = PacedTarget.model_validate(
        {"tokens": args.tokens, "token_delay_s": args.token_delay, "first_token_s": 0.05}
    )
    replica, replica_url = start_paced_replica(paced)
    try:
        config_path, keys, base = soak_config(args.out, replica_url)
        args.base = base
        loragate = str(Path(sys.executable).with_name("loragate"))
        server = ServerProcess(
            [loragate, "serve", "--config", str(config_path), "--port", "{port}"],
            port=free_port(),
            ready_path="/ready",
            log_path=args.out / "gateway.log",
            ready_timeout_s=600,
        )
        with server as url:
            assert server.process is not None
            rec = asyncio.run(drive(url, keys, server.process.pid, args))
    finally:
        replica.terminate()
        replica.wait(10)
    table = report(rec, args)
    print(table)
    (args.out / "soak.md").write_text(table + "\n", encoding="utf-8")
    with (args.out / "samples.csv").open("w", encoding="utf-8") as f:
        f.write("t_s,rss_mib,fds\n")
        f.writelines(f"{t:.1f},{r:.1f},{n}\n" for t, r, n in rec.samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
