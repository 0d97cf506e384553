"""The request head's limits under the server the gateway runs (``GracefulServer``):
a huge header or too many header fields get 431 without the server reading them all,
a head that arrives too slowly (or never) gets 408 and the connection closes, and
ordinary requests (keep-alive, a large body in one read) are untouched.

Real uvicorn on loopback in a thread, raw sockets as clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from gateway.api.graceful_server import GracefulServer
from gateway.api.http_limits import MAX_HEAD_BYTES, MAX_HEADERS, LimitedHttpToolsProtocol
from gateway.pipeline.drain import Drain
from tests.support.engine_fixtures import free_port

HEAD_TIMEOUT = 1.0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read %d" % size})


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.setattr(LimitedHttpToolsProtocol, "head_timeout", HEAD_TIMEOUT)
    chosen = free_port()
    server = GracefulServer(
        uvicorn.Config(app, host="127.0.0.1", port=chosen, log_level="critical"), Drain(1)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield chosen
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def connect(port: int) -> Iterator[Any]:
    opened: list[socket.socket] = []

    def open_one() -> socket.socket:
        opened.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        return opened[-1]

    yield open_one
    for sock in opened:
        sock.close()


def status_of(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0]


def closed(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_the_server_uses_the_limited_parser() -> None:
    server = GracefulServer(uvicorn.Config(app), Drain(1))
    assert server.config.http is LimitedHttpToolsProtocol


def test_a_64_mib_header_is_refused_before_it_is_read(connect: Any) -> None:
    sock = connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    chunk = b"a" * 65536
    with pytest.raises(OSError):  # the server closes long before 64 MiB
        while sent < 64 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    assert sent < 16 * 1024 * 1024


@pytest.mark.parametrize("fields", [MAX_HEADERS + 1, 100_000])
def test_too_many_header_fields_get_431(connect: Any, fields: int) -> None:
    sock = connect()
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(fields))
    with contextlib.suppress(OSError):
        sock.sendall(head + b"\r\n")
    assert status_of(sock) == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert closed(sock)


def test_a_header_just_over_the_size_gets_431_and_one_under_is_served(connect: Any) -> None:
    under = connect()
    under.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n\r\n"
    )
    assert status_of(under) == b"HTTP/1.1 200 OK"
    over = connect()
    with contextlib.suppress(OSError):
        over.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")
    assert status_of(over) == b"HTTP/1.1 431 Request Header Fields Too Large"


def test_a_slow_head_gets_408_and_an_idle_connection_is_closed(connect: Any) -> None:
    slow = connect()
    idle = connect()
    started = time.monotonic()
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    for i in range(40):  # a header line every 0.2 s: it would never end
        slow.settimeout(0.2)
        try:
            answer = slow.recv(4096)
            break
        except TimeoutError:
            slow.sendall(b"X-Slow-%d: v\r\n" % i)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
    assert HEAD_TIMEOUT * 0.8 < took < HEAD_TIMEOUT + 3
    idle.settimeout(HEAD_TIMEOUT + 5)
    assert idle.recv(4096).startswith(b"HTTP/1.1 408")


def test_keep_alive_and_a_large_body_are_untouched(connect: Any) -> None:
    sock = connect()
    body = b"x" * (4 * MAX_HEAD_BYTES)
    for _ in range(3):
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        data = b""
        while not data.endswith(b"0\r\n\r\n"):  # the end of a chunked body
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK") and b"read %d" % len(body) in data
    time.sleep(HEAD_TIMEOUT * 1.5)  # idle between requests: not a slow head
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(sock) == b"HTTP/1.1 200 OK"
