"""The overhead benchmark's table: added latency is the target's minus the backend's."""

from __future__ import annotations

import argparse

import pytest

from loadtests.bench_overhead import Target, print_table
from loadtests.raw_load import LoadResult


def result(ms: float, n: int = 10, seconds: float = 1.0) -> LoadResult:
    return LoadResult(latencies=[ms / 1000] * n, seconds=seconds)


def target(name: str, ms: float, rps_n: int, cpu: float | None) -> Target:
    t = Target(name, 1, None)
    t.results = {"c1-stream": result(ms), "c1-json": result(ms / 2), "c32": result(ms, rps_n)}
    t.cpu_ms_per_request = cpu
    return t


def test_the_table_reports_added_latency_and_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(tokens=8, seconds=5.0, concurrency=32, rounds=1)
    skipped = Target("LiteLLM proxy", 0, None, note="skipped: no venv")
    targets = [
        target("backend directly", 1.0, 1000, 0.05),
        target("gateway a", 3.0, 400, 2.0),
        target("gateway b", 21.0, 40, 20.0),
        skipped,
    ]
    print_table(targets, args, (0.5, 0, 0), (0.6, 0, 0))
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| gateway a"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["3.00", "3.00", "2.00", "2.00"]  # p50, p99, added p50, added p99
    assert cells[6] == "1.00"  # JSON: 1.5 - 0.5
    assert cells[7:9] == ["400", "2.00"]
    assert "| LiteLLM proxy | skipped: no venv |" in out
    assert "gateway b / gateway a: added p50 x10.0, CPU-ms per request x10.0" in out
    assert "serves x10.0 the requests/s" in out
    assert "p50 +18.00 ms streamed, +9.00 ms JSON." in out


def test_rounds_pool_their_latencies_errors_and_time() -> None:
    t = Target("gateway", 1, None)
    t.add("c1-stream", LoadResult(latencies=[0.001] * 3, seconds=1.0))
    t.add("c1-stream", LoadResult(latencies=[0.005] * 4, errors=2, first_error="boom", seconds=2.0))
    pooled = t.results["c1-stream"]
    assert pooled.requests == 7 and pooled.p50 == 5.0
    assert (pooled.errors, pooled.first_error, pooled.seconds) == (2, "boom", 3.0)
