"""A cheap HTTP/1.1 load generator for overhead benchmarks (raw asyncio, keep-alive).

The client shares two cores with the servers it measures, so it must cost little:
no HTTP library, one connection per concurrent worker, requests prebuilt as bytes,
responses framed (Content-Length or chunked) without being decoded. A response
counts as good when its status is 200 and, for a stream, it ends with
``data: [DONE]``; anything else is counted as an error (never silently timed).
Concurrency rule: one event loop; each worker owns its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ResponseError(Exception):
    """A response that is not a complete 200 answer."""


def build_request(host: str, port: int, path: str, body: dict[str, Any], key: str | None) -> bytes:
    payload = json.dumps(body).encode()
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"{auth}content-length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


class Connection:
    """One keep-alive connection; ``call`` sends a request and reads its whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, request: bytes) -> bytes:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            body = b"".join(parts)
        else:
            start = headers.find(b"content-length:")
            if start < 0:
                raise ResponseError(f"no framing (status {status})")
            length = int(headers[start + 15 : headers.find(b"\r\n", start)])
            body = await self.reader.readexactly(length)
        if b"connection: close" in headers:
            await self.close()
        if status != 200:
            raise ResponseError(f"HTTP {status}: {body[:200]!r}")
        return body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


def check_body(body: bytes, stream: bool) -> None:
    if stream:
        if not body.rstrip().endswith(b"data: [DONE]"):
            raise ResponseError(f"stream did not end with [DONE]: {body[-200:]!r}")
    elif b'"choices"' not in body:
        raise ResponseError(f"no choices: {body[:200]!r}")


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Milliseconds at quantile ``q`` (0..1)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return 1000 * statistics.median(self.latencies) if self.latencies else float("nan")


async def run_load(
    host: str,
    port: int,
    request: bytes,
    *,
    stream: bool,
    concurrency: int,
    seconds: float,
    warmup: int = 0,
    window: Callable[[], None] | None = None,
) -> LoadResult:
    """Timed requests from ``concurrency`` workers for ``seconds`` (after ``warmup``
    untimed ones per worker, which also open the connections). ``window`` is called just
    before and just after the timed part (to read a server's CPU time)."""
    result = LoadResult()
    connections = [Connection(host, port) for _ in range(concurrency)]
    deadline = 0.0

    async def warm(conn: Connection) -> None:
        for _ in range(warmup):
            check_body(await conn.call(request), stream)

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                body = await conn.call(request)
                check_body(body, stream)
            except (ResponseError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                result.errors += 1
                result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
                await conn.close()
                continue
            result.latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(warm(c) for c in connections))
        if window is not None:
            window()
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(worker(c) for c in connections))
        result.seconds = time.perf_counter() - started
        if window is not None:
            window()
    finally:
        for conn in connections:
            await conn.close()
    return result
