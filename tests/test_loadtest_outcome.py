"""Reading chat responses into load-test outcomes (SSE and JSON), with a fake clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadtests.chat_outcome import (
    http_failure,
    read_completion,
    read_stream,
    split_lines,
    sse_data,
)


def clock_from(times: list[float]) -> Callable[[], float]:
    ticks = iter(times)
    return lambda: next(ticks)


def sse(*payloads: Any) -> list[bytes]:
    text = "".join(f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads)
    return text.encode().splitlines()


def delta(content: str | None, role: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {} if role is None else {"role": role}
    if content is not None:
        d["content"] = content
    return {"choices": [{"index": 0, "delta": d}]}


USAGE_5 = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}}


def test_stream_ttft_tpot_and_usage_tokens() -> None:
    # One clock reading per event, then one at the end. Request sent at t=10.0.
    lines = sse(delta("", role="assistant"), delta("a"), delta("b"), delta("cd"), USAGE_5, "[DONE]")
    outcome = read_stream(lines, 10.0, clock_from([10.1, 10.3, 10.5, 10.9, 11.0, 11.0, 11.2]))
    assert outcome.ok
    assert outcome.output_tokens == 5  # from usage, not the 3 content chunks
    assert outcome.ttft_s == pytest.approx(0.3)  # first chunk with content, not the role chunk
    assert outcome.tpot_s == pytest.approx((10.9 - 10.3) / 4)
    assert outcome.latency_s == pytest.approx(1.2)


def test_stream_without_usage_counts_content_chunks() -> None:
    lines = sse(delta("a"), delta("b"), "[DONE]")
    outcome = read_stream(lines, 0.0, clock_from([1.0, 2.0, 2.0, 2.0]))
    assert outcome.ok and outcome.output_tokens == 2
    assert outcome.ttft_s == 1.0 and outcome.tpot_s == 1.0


def test_stream_of_one_token_has_ttft_but_no_tpot() -> None:
    outcome = read_stream(sse(delta("a"), "[DONE]"), 0.0, clock_from([1.0, 1.0, 1.0]))
    assert outcome.ok and outcome.ttft_s == 1.0 and outcome.tpot_s is None


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ((delta("a"), delta("b")), "stream ended without [DONE]"),
        (
            (
                delta("a"),
                {"error": {"message": "engine died", "type": "InternalServerError"}},
                "[DONE]",
            ),
            "stream error event: engine died",
        ),
        ((delta("a"), "{not json", "[DONE]"), "stream event is not JSON"),
        ((), "stream ended without [DONE]"),
    ],
)
def test_stream_failures(events: tuple[Any, ...], message: str) -> None:
    outcome = read_stream(sse(*events), 0.0, clock_from([1.0] * 10))
    assert not outcome.ok
    assert outcome.error == message
    assert outcome.output_tokens == 0


def test_completion_tokens_from_usage() -> None:
    body = {
        "choices": [{"index": 0, "message": {"content": "hi"}}],
        "usage": {"completion_tokens": 7},
    }
    outcome = read_completion(json.dumps(body).encode(), 1.0, lambda: 1.5)
    assert outcome.ok and outcome.output_tokens == 7 and outcome.latency_s == 0.5
    assert outcome.ttft_s is None and outcome.tpot_s is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "response is not JSON"),
        (b'{"choices": []}', "response has no choices"),
        (b'{"choices": [{"index": 0}]}', "response has no usage.completion_tokens"),
        (b'{"error": {"message": "boom"}}', "error body: boom"),
    ],
)
def test_completion_failures(body: bytes, message: str) -> None:
    assert read_completion(body, 0.0, lambda: 1.0).error == message


def test_http_failure_names_status_and_openai_message() -> None:
    body = json.dumps({"error": {"message": "The model `x` does not exist.", "type": "NotFound"}})
    assert http_failure(404, body.encode()) == "HTTP 404: The model `x` does not exist."
    assert http_failure(502, b"") == "HTTP 502"
    long = http_failure(500, b"x" * 5000)
    assert long.startswith("HTTP 500: xxx") and len(long) <= 200


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_split_lines_whatever_the_chunking(size: int) -> None:
    data = b"data: a\r\n\r\ndata: b\n\ndata: c\r\rlast"
    expected = [b"data: a", b"", b"data: b", b"", b"data: c", b"", b"last"]
    assert list(split_lines(chunked(data, size))) == expected


def test_sse_data_joins_multiline_data_and_skips_comments() -> None:
    lines = [b": keep-alive", b"", b"event: x", b"data: one", b"data:two", b"", b"data: [DONE]"]
    assert list(sse_data(lines)) == ["one\ntwo", "[DONE]"]
