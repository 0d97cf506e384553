"""``loragate compare`` is resumable: killed mid-run (SIGKILL, a real process), a rerun
asks only for the pairs that have no answer yet, and the report covers all of them.

The server is a small OpenAI-compatible chat server on a real socket (streamed
answers, slow enough to kill the client midway) that records what it was asked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main

pytestmark = pytest.mark.integration  # kills a real compare process mid-run

ANSWER_DELAY_S = 0.25
ITEMS = 6
VARIANTS = ("alpha", "beta")


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.asked: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.busy_left = 0  # requests for ``m-busy`` refused with 429 before it answers


class ChatHandler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions, streamed: ``alpha`` says the fact, ``beta`` does not,
    ``broken`` gets a 404 (not retried by the SDK, so the test is quick)."""

    protocol_version = "HTTP/1.1"
    server: ChatServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = body["messages"][-1]["content"]
        with self.server.lock:
            self.server.asked.append((body["model"], question))
        refused = 0
        if body["model"] == "m-busy":
            with self.server.lock:
                refused, self.server.busy_left = self.server.busy_left, self.server.busy_left - 1
        if body["model"] == "broken" or refused > 0:
            payload = json.dumps({"error": {"message": "no such model", "type": "x"}})
            self.send_response(404 if body["model"] == "broken" else 429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload.encode())
            return
        time.sleep(ANSWER_DELAY_S)
        text = "Paris it is." if body["model"] in ("m-alpha", "m-busy") else "No idea."
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        chunks: list[dict[str, Any]] = [
            {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": usage},
        ]
        for chunk in chunks:
            chunk.update(id="c", object="chat.completion.chunk", created=0, model=body["model"])
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def write_inputs(tmp_path: Path, extra_variant: str = "") -> tuple[Path, Path]:
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "lang": "en", "question": f"Q{i}?", "facts": ["paris"]})
            + "\n"
            for i in range(ITEMS)
        )
    )
    variants = tmp_path / "variants.yaml"
    variants.write_text(
        "variants:\n"
        + "".join(f"  - {{name: {v}, model: m-{v}}}\n" for v in VARIANTS)
        + extra_variant
    )
    return eval_file, variants


def compare_args(srv: ChatServer, eval_file: Path, variants: Path, out: Path) -> list[str]:
    return [
        "compare",
        "--base-url", f"http://127.0.0.1:{srv.server_address[1]}/v1",
        "--api-key", "test-key",
        "--eval", str(eval_file),
        "--variants", str(variants),
        "--out", str(out),
        "--concurrency", "2",
        "--no-progress",
        "--resamples", "200",
    ]  # fmt: skip


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_killed_run_resumes_with_only_the_missing_pairs(server: ChatServer, tmp_path: Path) -> None:
    eval_file, variants = write_inputs(tmp_path)
    out = tmp_path / "out"
    results = out / "results.jsonl"
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    command = [sys.executable, "-m", "gateway.cli", *compare_args(server, eval_file, variants, out)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and len(results.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    first = {(r["item_id"], r["variant"]) for r in lines(results)}
    assert 3 <= len(first) < ITEMS * len(VARIANTS)
    server.asked.clear()

    assert main(compare_args(server, eval_file, variants, out)) == 0
    everything = {(f"q{i}", v) for i in range(ITEMS) for v in VARIANTS}
    asked = {(f"q{q.strip('Q?')}", m.removeprefix("m-")) for m, q in server.asked}
    assert asked == everything - first and len(server.asked) == len(asked)
    assert {(r["item_id"], r["variant"]) for r in lines(results)} == everything
    report = json.loads((out / "report.json").read_text())
    assert report["answers"] == {"alpha": ITEMS, "beta": ITEMS}
    assert report["overall"]["alpha"]["fact_accuracy"] == 1.0
    assert report["sentences"]["fact_accuracy"].startswith("Fact accuracy: alpha wins")
    assert {"report.md", "quality_latency.png", "by_language.png"} <= {
        p.name for p in out.iterdir()
    }

    server.asked.clear()  # nothing left: a third run asks nothing
    assert main(compare_args(server, eval_file, variants, out)) == 0
    assert server.asked == []


def test_failed_pairs_are_retried_and_changed_variants_redone(
    server: ChatServer, tmp_path: Path
) -> None:
    eval_file, variants = write_inputs(tmp_path, "  - {name: gamma, model: broken}\n")
    out = tmp_path / "out"
    args = [*compare_args(server, eval_file, variants, out), "--limit", "2"]
    assert main(args) == 1  # gamma's requests failed
    assert len(server.asked) == 2 * 3
    server.asked.clear()
    assert main(args) == 1
    assert sorted(server.asked) == [("broken", "Q0?"), ("broken", "Q1?")]  # only the failed
    server.asked.clear()
    variants.write_text(variants.read_text().replace("model: broken", "model: m-alpha"))
    assert main(args) == 0
    assert sorted(server.asked) == [("m-alpha", "Q0?"), ("m-alpha", "Q1?")]
    server.asked.clear()
    variants.write_text(
        variants.read_text().replace(
            "name: beta, model: m-beta", "name: beta, model: m-beta, system: Be brief."
        )
    )
    assert main(args) == 0  # beta now sends a system prompt: its answers are redone
    assert sorted(server.asked) == [("m-beta", "Q0?"), ("m-beta", "Q1?")]


def test_a_busy_gateway_is_waited_out_not_recorded_as_failed(
    server: ChatServer, tmp_path: Path
) -> None:
    # 429 (the tenant's in-flight cap) more times than the SDK's own two retries cover.
    eval_file, variants = write_inputs(tmp_path, "  - {name: busy, model: m-busy}\n")
    server.busy_left = 5
    out = tmp_path / "out"
    assert main([*compare_args(server, eval_file, variants, out), "--limit", "1"]) == 0
    busy = [r for r in lines(out / "results.jsonl") if r["variant"] == "busy"]
    assert [(r["error"], r["text"]) for r in busy] == [(None, "Paris it is.")]
    assert server.asked.count(("m-busy", "Q0?")) == 6


def test_a_report_leaves_out_answers_made_with_other_settings(
    server: ChatServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eval_file, variants = write_inputs(tmp_path)
    out = tmp_path / "out"
    args = [*compare_args(server, eval_file, variants, out), "--limit", "2"]
    assert main([*args, "--max-tokens", "48"]) == 0
    assert "2 items x 2 variants: 4 answers" in (out / "report.md").read_text()
    capsys.readouterr()
    # answers made at 48 tokens are not reported as answers made at 96
    assert main([*args, "--report-only", "--max-tokens", "96"]) == 0
    assert "4 saved answers were made with other inputs" in capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "2 items x 2 variants: 0 answers" in report and "max_tokens 96" in report


def test_bad_input_files_exit_2_with_line_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text('{"id": "a", "lang": "en", "question": "Q", "facts": ["x"]}\n{oops}\n')
    variants = tmp_path / "variants.yaml"
    variants.write_text("variants: []\n")
    args = [
        "compare",
        "--eval",
        str(eval_file),
        "--variants",
        str(variants),
        "--out",
        str(tmp_path),
    ]
    assert main([*args, "--api-key", "k"]) == 2
    assert "line 2: not JSON" in capsys.readouterr().err
    eval_file.write_text('{"id": "a", "lang": "en", "question": "Q", "facts": ["x"]}\n')
    assert main([*args, "--api-key", "k"]) == 2
    assert "variants (line 1): List should have at least 1 item" in capsys.readouterr().err
