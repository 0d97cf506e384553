"""The load-test runner: arguments, loopback-only targets, the server it starts, and one
short Locust run against a misbehaving fake server (failures must be counted)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.report import read_failures, read_steps
from loadtests.run import parse_duration, parse_users
from loadtests.target import (
    ServerProcess,
    TargetError,
    free_port,
    require_loopback,
    served_models,
)

ROOT = Path(__file__).resolve().parent.parent
FAKE_SERVER = [
    sys.executable,
    str(ROOT / "tests" / "support" / "fake_openai_server.py"),
    "--port",
    "{port}",
]


def test_durations() -> None:
    assert parse_duration("45") == 45
    assert parse_duration("30s") == 30
    assert parse_duration("2m") == 120
    assert parse_duration("1h30m") == 5400
    for bad in ("", "0s", "soon", "5x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_user_counts() -> None:
    assert parse_users("1,4,8") == [1, 4, 8]
    for bad in ("", "0", "1,1", "a", ",".join(str(i) for i in range(1, 30)), "100000"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_users(bad)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:1/", "https://[::1]:9", "http://127.1.2.3"]
)
def test_loopback_urls_are_accepted(url: str) -> None:
    assert require_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:8000"]
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(TargetError):
        require_loopback(url)


@pytest.mark.integration  # starts a server process
def test_server_process_starts_waits_and_stops_its_group(tmp_path: Path) -> None:
    server = ServerProcess(
        FAKE_SERVER,
        port=free_port(),
        ready_path="/v1/models",
        log_path=tmp_path / "server.log",
        ready_timeout_s=30,
    )
    with server as url:
        process = server.process
        assert process is not None and process.poll() is None
        assert url == server.base_url
    assert process.wait(timeout=1) is not None


@pytest.mark.integration  # starts a server process
def test_a_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('no model here'); raise SystemExit(3)"]
    server = ServerProcess(
        command, port=free_port(), ready_path="/", log_path=tmp_path / "s.log", ready_timeout_s=30
    )
    started = time.monotonic()
    with pytest.raises(TargetError, match=r"(?s)exited with code 3.*no model here"):
        server.start()
    assert time.monotonic() - started < 20


@pytest.mark.integration  # a headless Locust run in a subprocess
def test_locust_run_counts_every_kind_of_failure(tmp_path: Path) -> None:
    """Runner -> fake server -> Locust -> CSV -> report, in a few seconds, no engine."""
    scenario = tmp_path / "fake.yaml"
    scenario.write_text(
        "models: {names: [good, no-done, error-event, missing]}\n"
        "output_tokens: {dist: uniform, min: 3, max: 5}\n"
        "prompt_tokens: 8\n"
        "stream_share: 0.8\n"
    )
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "loadtests.run",
        "--server-cmd", " ".join(FAKE_SERVER),
        "--scenario", str(scenario), "--users", "2", "--run-time", "3s",
        "--stop-timeout", "5", "--out", str(out), "--ready-timeout", "30",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "does not list ['missing']" in done.stderr
    [step] = read_steps(out)
    assert step.users == 2 and step.requests > 10
    assert 0 < step.failures < step.requests
    assert step.ttft_p50_ms is not None and 40 <= step.ttft_p50_ms < 1000  # server waits 50 ms
    assert step.tpot_p50_ms is not None and 10 <= step.tpot_p50_ms < 500  # then 20 ms per token
    assert step.output_tokens_per_s > 0
    messages = {f.message for f in read_failures(out, [2])}
    assert messages == {
        "stream ended without [DONE]",
        "stream error event: engine failed",
        "HTTP 404: The model `missing` does not exist.",
    }
    report = (out / "report.md").read_text()
    assert "| 2 |" in report and "## Failures" in report
    assert (out / "u002.html").stat().st_size > 0


@pytest.mark.integration  # starts a server process
def test_served_models_lists_the_fake_server_models(tmp_path: Path) -> None:
    server = ServerProcess(
        FAKE_SERVER,
        port=free_port(),
        ready_path="/v1/models",
        log_path=tmp_path / "server.log",
        ready_timeout_s=30,
    )
    with server as url:
        assert served_models(url) == {"good", "no-done", "error-event", "broken-json"}
    assert served_models(url) is None  # nothing listens any more
