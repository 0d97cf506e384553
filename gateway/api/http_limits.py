"""``LimitedHttpToolsProtocol``: uvicorn's httptools protocol with limits on the request
head (the request line and headers), which httptools itself does not have.

uvicorn's default parser (httptools/llhttp) reads a header of any size and any number
of headers, and nothing times out a connection that sends a head slowly: a 64 MiB
header and 100,000 headers are answered 200, and a connection sending a header line
every second stays open for as long as it goes on (``loadtests/bench_http_limits.py``
measures all three). h11, uvicorn's other parser, caps the head at
``h11_max_incomplete_event_size`` but has no timeout either and costs about four times
the CPU per request. So the gateway keeps httptools and adds:

* ``MAX_HEAD_BYTES``: a head larger than this gets ``431`` and the connection is
  closed (counted as bytes arrive, so a huge header is never held in full);
* ``MAX_HEADERS``: more header fields than this get ``431``;
* ``HEAD_TIMEOUT_SECONDS``: a head not complete this long after its first byte (or
  after the connection opened) gets ``408`` and the connection is closed. Idle time
  between requests is uvicorn's keep-alive timeout.

Bodies are not affected (``limits.max_request_bytes`` and the upload limits apply to
them). Concurrency rule: asyncio protocol callbacks, on the event loop only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT_SECONDS = 10.0

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = MAX_HEAD_BYTES
    max_headers = MAX_HEADERS
    head_timeout = HEAD_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        """Between a request's first byte and the end of its headers."""
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: int | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    # -- the head's size and field count

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        was_in_head = self._in_head
        super().data_received(data)
        # Whole chunks are counted only when they are all head (a chunk in which a head
        # begins may also hold the end of the previous body; the parser's callbacks
        # count that part): a huge header is refused within one read of the limit.
        if was_in_head and self._in_head and self._refusal is None:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, "The request's headers are too large.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers or len(name) + len(value) > self.max_head_bytes:
            self._refusal = 431
            raise ValueError("header fields over the limits")  # httptools: a parser error
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal == 431:  # raised in on_header: the parser reports an error
            self._refusal = None
            self._refuse(431, "The request's header fields are over the limits.")
            return
        super().send_400_response(msg)

    # -- the head's time

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._cancel_head_timer()  # idle until the next request: the keep-alive timeout

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not (self._in_head or self.cycle is None):
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head stalls behind an answer still being sent: no status
            # line in the middle of that answer, the connection just ends.
            self._refusal = 408
            self.transport.close()
            return
        self._refuse(408, "The request's headers took too long to arrive.")

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = status
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()
