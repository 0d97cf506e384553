"""``StreamPool``: keep-alive HTTP/1.1 connections for the streamed POSTs to one replica.

Every generation is one streamed ``POST /v1/completions``; through httpx (httpcore,
anyio, h11) each cost about as much CPU as the rest of the gateway's request path.
This is the same exchange on ``asyncio`` transports with ``httptools``' C parser (the
one uvicorn serves with): the request goes out in one write, the body comes back as
the bytes that have arrived (several SSE events at once when the replica is quick),
and a connection whose response ended goes back to the pool.

Errors (``StreamError``; the caller maps them to its own):

    StreamError
    ├── StreamConnectError   the replica could not be reached (connect failed)
    ├── StreamBrokenError    the connection broke or the answer was not HTTP
    └── LineTooLongError     an SSE line longer than the cap (``LineSplitter``)

Deadlines are the caller's (``asyncio.timeout`` around each await). Concurrency rule:
one event loop; a connection serves one request at a time; ``close`` of a response
that did not end closes its connection (a replica aborts the request on that).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

BUFFERED_LIMIT = 1 << 20
"""Bytes of response body held before the replica is asked to wait (pause_reading)."""


class StreamError(Exception):
    """A streamed exchange failed below HTTP (no status to blame)."""


class StreamConnectError(StreamError):
    """The replica could not be reached."""


class StreamBrokenError(StreamError):
    """The connection closed or sent something that is not HTTP/1.1."""


class LineTooLongError(StreamError):
    """A line of the body is longer than the reader accepts."""


class LineSplitter:
    """Splits a body into lines as its bytes arrive, in time linear in its size.

    A partial line is kept as a list of pieces, joined once when its newline comes, so a
    replica that sends a long line in many small pieces costs no more than a short one;
    a line (or a partial one) over ``max_line`` bytes raises ``LineTooLongError``.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._pieces: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines that ``chunk`` completes (without their newline)."""
        if b"\n" not in chunk:
            self._keep(chunk)
            return []
        head, *lines, tail = chunk.split(b"\n")
        if self._pieces:
            self._keep(head)
            head = b"".join(self._pieces)
            self._pieces.clear()
            self._size = 0
        lines.insert(0, head)
        if any(len(line) > self.max_line for line in lines):
            raise LineTooLongError(f"a line of the answer is over {self.max_line} bytes")
        self._keep(tail)
        return lines

    def _keep(self, piece: bytes) -> None:
        if not piece:
            return
        self._size += len(piece)
        if self._size > self.max_line:
            raise LineTooLongError(f"a line of the answer is over {self.max_line} bytes")
        self._pieces.append(piece)


class _Connection(asyncio.Protocol):
    """One connection and the response being read on it (callbacks from the parser)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.headers_done = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.error: StreamError | None = None
        self.received_any = False
        self.paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(StreamBrokenError("the replica switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(StreamBrokenError(f"unreadable HTTP answer: {exc}"))
        if self.buffered > BUFFERED_LIMIT and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.complete:
            self._fail(StreamBrokenError(f"connection closed: {exc or 'by the replica'}"))
        self._wake()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        self.complete = True

    # reading side
    def _fail(self, error: StreamError) -> None:
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        """Until more has arrived (or the connection ended)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class StreamResponse:
    """A response being read: ``status``, then ``read`` until ``b""`` (no caller reads the
    replica's headers: httptools calls no header callback, so none are collected)."""

    def __init__(self, pool: StreamPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status = conn.status

    @property
    def connection(self) -> _Connection | None:
        """The connection this response is read from; None once closed."""
        return self._conn

    async def read(self) -> bytes:
        """The body bytes that have arrived (waiting for some); ``b""`` at its end."""
        conn = self._conn
        if conn is None:
            return b""
        while not conn.chunks:
            if conn.complete:
                return b""
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        return conn.take()

    async def read_at_most(self, limit: int) -> bytes:
        """The body, cut after ``limit`` bytes (the rest is not read: ``close`` then
        closes the connection)."""
        parts = []
        size = 0
        while size < limit and (chunk := await self.read()):
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)[:limit]

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Give the connection back when the response ended, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.complete and conn.keep_alive and conn.error is None and conn.usable:
            self._pool.release(conn)
        else:
            conn.close()


class StreamPool:
    """Connections to the origin of ``base_url``; ``post`` sends one streamed request."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        max_idle: int = 64,
    ) -> None:
        url = urlsplit(base_url)
        self.host = url.hostname or "localhost"
        self.https = url.scheme == "https"
        self.port = url.port or (443 if self.https else 80)
        self.prefix = url.path.rstrip("/")
        host_header = url.netloc.rsplit("@", 1)[-1]
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"host": host_header, **headers}.items())
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if self.https else None

    async def post(
        self,
        path: str,
        body: bytes,
        *,
        connect_timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> StreamResponse:
        """Send ``POST path`` with a JSON ``body`` (and ``headers`` besides the pool's);
        return once the status line and the headers are in. A reused connection that the
        replica had closed meanwhile is replaced by a new one (nothing had reached the
        replica)."""
        extra = (
            "".join(f"{k}: {_header_value(v)}\r\n" for k, v in headers.items()) if headers else ""
        )
        request = (
            f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}{extra}"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable:
                continue
            try:
                return await self._exchange(conn, request)
            except StreamBrokenError:
                if conn.received_any:
                    raise
                # Closed by the replica while idle (keep-alive timeout): a new one.
        return await self._exchange(await self._connect(connect_timeout), request)

    async def _connect(self, seconds: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                _, conn = await loop.create_connection(
                    _Connection, self.host, self.port, ssl=self._ssl
                )
        except (OSError, TimeoutError) as exc:
            raise StreamConnectError(f"cannot connect: {type(exc).__name__}") from exc
        return conn

    async def _exchange(self, conn: _Connection, request: bytes) -> StreamResponse:
        conn.reset()
        assert conn.transport is not None
        conn.transport.write(request)
        try:
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            conn.close()
            raise
        return StreamResponse(self, conn)

    @property
    def idle(self) -> tuple[_Connection, ...]:
        """The connections kept open for the next requests (the last is reused first)."""
        return tuple(self._idle)

    def release(self, conn: _Connection) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _header_value(value: str) -> str:
    """A header value as sent: one line (a trace header carries a caller's
    ``tracestate``, checked by the propagator; this refuses a line break whatever)."""
    if "\r" in value or "\n" in value:
        raise ValueError("a header value must not contain a line break")
    return value
