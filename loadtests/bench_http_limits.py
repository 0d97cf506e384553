"""What uvicorn's HTTP parsers do with hostile request heads, and what the gateway's own
protocol (``gateway.api.http_limits``) does: one table.

    python -m loadtests.bench_http_limits [--trickle-seconds 40] [--requests 3000]

Per parser (uvicorn's httptools, uvicorn's h11 with its default 16 KiB
``h11_max_incomplete_event_size``, and the gateway's ``LimitedHttpToolsProtocol``), each
case against a fresh server process serving a one-line ASGI app:

- ``64 MiB header``: one header value of 64 MiB;
- ``100k headers``: 100,000 short header fields;
- ``slow head``: the request line, then one header line a second, never finished, for
  ``--trickle-seconds`` (when did the server close the connection?);
- ``keep-alive GETs``: ``--requests`` small GETs on one connection, ``--rounds``
  rounds with the parsers interleaved: the server's CPU time per request (median; CPU
  time rather than wall time, which a shared machine's load swamps): what the parser
  costs on ordinary traffic.

Columns: the server's answer (status, or ``closed``/``open``), seconds until it, and the
growth of the server's peak RSS (VmHWM) in MiB. Timings on a shared machine are noisy:
compare the rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

PARSERS = ("httptools", "h11", "gateway")


async def app(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def serve(parser: str, port: int) -> None:
    import uvicorn

    from gateway.api.http_limits import LimitedHttpToolsProtocol

    http: object = LimitedHttpToolsProtocol if parser == "gateway" else parser
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, log_level="critical")  # type: ignore[arg-type]


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (steadier than wall time on a busy machine)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(parser: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadtests.bench_http_limits",
            "--serve",
            parser,
            "--port",
            str(port),
        ]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{parser} server did not start")


def answer(sock: socket.socket, timeout: float) -> str:
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return "open"
    except OSError:
        return "closed"
    if not data:
        return "closed"
    return data.split(b"\r\n", 1)[0].decode(errors="replace").removeprefix("HTTP/1.1 ")


def send_head(port: int, head: bytes) -> tuple[str, float]:
    sock = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    with contextlib.suppress(OSError):  # the server closed while we sent: read its answer
        sock.sendall(head)
    result = answer(sock, 60)
    sock.close()
    return result, time.monotonic() - started


def big_header(port: int, _: argparse.Namespace) -> tuple[str, float]:
    value = b"a" * (64 * 1024 * 1024)
    return send_head(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + value + b"\r\n\r\n")


def many_headers(port: int, _: argparse.Namespace) -> tuple[str, float]:
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(100_000))
    return send_head(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")


def slow_head(port: int, args: argparse.Namespace) -> tuple[str, float]:
    sock = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    i = 0
    while time.monotonic() - started < args.trickle_seconds:
        readable, _, _ = select.select([sock], [], [], 1.0)
        if readable:
            result = answer(sock, 1)
            sock.close()
            return result, time.monotonic() - started
        try:
            sock.sendall(b"X-Slow-%d: v\r\n" % i)
        except OSError:
            return "closed", time.monotonic() - started
        i += 1
    sock.close()
    return "open", time.monotonic() - started


def keep_alive_gets(port: int, args: argparse.Namespace) -> tuple[str, float]:
    sock = socket.create_connection(("127.0.0.1", port))
    request = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    started = time.monotonic()
    for _ in range(args.requests):
        sock.sendall(request)
        got = b""
        while not got.endswith(b"0\r\n\r\n"):  # the end of a chunked body
            chunk = sock.recv(4096)
            if not chunk:
                return "closed", time.monotonic() - started
            got += chunk
    seconds = time.monotonic() - started
    sock.close()
    return f"{args.requests / seconds:.0f} req/s", seconds


CASES: dict[str, Callable[[int, argparse.Namespace], tuple[str, float]]] = {
    "64 MiB header": big_header,
    "100k headers": many_headers,
    "slow head": slow_head,
}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=PARSERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trickle-seconds", type=float, default=40.0)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="keep-alive rounds per parser")
    parser.add_argument("--keep-alive-only", action="store_true", help="skip the hostile heads")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return 0
    print(f"# CPU: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()}")
    rows = [("parser", "case", "answer", "seconds", "peak RSS +MiB")]
    for name in PARSERS if not args.keep_alive_only else ():
        for case, run in CASES.items():
            proc, port = start(name)
            try:
                before = peak_rss_mib(proc.pid)
                result, seconds = run(port, args)
                time.sleep(0.2)
                grew = peak_rss_mib(proc.pid) - before
            finally:
                proc.terminate()
                proc.wait(timeout=10)
            rows.append((name, case, result, f"{seconds:.2f}", f"{grew:.1f}"))
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    rates: dict[str, list[float]] = {name: [] for name in PARSERS}
    closed = dict.fromkeys(PARSERS, 0)
    for _ in range(args.rounds):  # interleaved: the machine's load drifts between rounds
        for name in PARSERS:
            proc, port = start(name)
            try:
                before = cpu_seconds(proc.pid)
                result, seconds = keep_alive_gets(port, args)
                if result == "closed":  # the server ended the connection: no figure
                    closed[name] += 1
                else:
                    rates[name].append(1e6 * (cpu_seconds(proc.pid) - before) / args.requests)
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    for name in PARSERS:
        runs = "/".join(f"{r:.0f}" for r in rates[name])
        median = statistics.median(rates[name]) if rates[name] else float("nan")
        text = f"{median:.0f} server CPU us/request (rounds {runs}; closed early {closed[name]})"
        rows.append((name, "keep-alive GETs", text, "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"# load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
