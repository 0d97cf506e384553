"""The load test against the real gateway (tiny Llama on vLLM): a few seconds of Locust
through ``python -m loadtests.run --url``, then the report it wrote."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.report import read_failures, read_steps
from tests.support.engine_fixtures import LiveGateway

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = """
name: live
seed: 3
tenants:
  - {name: acme, api_key: sk-live-acme, weight: 2}
  - {name: globex, api_key: sk-live-globex, models: [a2, tiny-llama]}
models:
  names: [a1, a2, a3, tiny-llama]
  popularity: zipf
  zipf_s: 1.0
prompt_tokens: {dist: uniform, min: 16, max: 48}
output_tokens: {dist: normal, mean: 12, stddev: 4, min: 4, max: 20}
stream_share: 0.6
request: {temperature: 0.8}
"""


def test_locust_against_the_live_gateway_reports_no_failures(
    live_gateway: LiveGateway, tmp_path: Path
) -> None:
    scenario = tmp_path / "live.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "results"
    command = [
        sys.executable, "-m", "loadtests.run",
        "--url", live_gateway.base_url, "--scenario", str(scenario),
        "--users", "2", "--run-time", "6s", "--stop-timeout", "60", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    [step] = read_steps(out)
    failures = read_failures(out, [2])
    assert step.failures == 0 and not failures, failures
    assert step.users == 2 and step.requests >= 2
    assert step.p50_ms is not None and step.p99_ms is not None and step.p50_ms > 0
    assert step.ttft_p50_ms is not None and step.ttft_p50_ms <= step.p99_ms
    assert step.tpot_p50_ms is not None
    assert step.output_tokens_per_s > 0
    report = (out / "report.md").read_text()
    assert "| 2 | " in report and "## Failures" not in report
    for name in ("latency.png", "throughput.png", "u002.html", "u002_stats.csv"):
        assert (out / name).stat().st_size > 0
    assert live_gateway.unfinished_requests() == 0
