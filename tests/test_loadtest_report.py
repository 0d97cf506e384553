"""The load-test report: Locust CSVs in, Markdown and PNG plots out (synthetic CSVs)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from loadtests.report import read_failures, read_steps, write_report

COLUMNS = [
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(
    kind: str, count: int, fails: int, size: float, rps: float, p50: int, p90: int, p99: int
) -> list[object]:
    pct = [p50, p50, p50, p90, p90, p99, p99, p99, p99, p99, p99]
    return [kind, "/v1/chat/completions", count, fails, p50, p50, 1, p99, size, rps, 0, *pct]


def write_stats(path: Path, rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        # Locust's own total row mixes in the TTFT/TPOT events: the report must ignore it.
        writer.writerow(["", "Aggregated", 9999, 0, 1, 1, 1, 1, 1, 999, 0, *[1] * 11])


@pytest.fixture
def results(tmp_path: Path) -> Path:
    write_stats(
        tmp_path / "u001_summary.csv",
        [
            row("POST", 20, 0, 50.0, 2.0, 400, 500, 600),
            row("TTFT", 14, 0, 0.0, 1.4, 40, 60, 90),
            row("TPOT", 14, 0, 0.0, 1.4, 8, 9, 12),
        ],
    )
    write_stats(
        tmp_path / "u004_summary.csv",
        [row("POST", 60, 3, 40.0, 6.0, 700, 900, 1500), row("TTFT", 40, 0, 0.0, 4.0, 80, 100, 200)],
    )
    # A stale snapshot next to a summary is ignored; a lone snapshot is used.
    write_stats(tmp_path / "u004_stats.csv", [row("POST", 1, 1, 1.0, 1.0, 1, 1, 1)])
    write_stats(tmp_path / "u008_stats.csv", [row("POST", 80, 0, 30.0, 8.0, 900, 1200, 2000)])
    with open(tmp_path / "u004_summary_failures.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"])
        writer.writerow(
            ["POST", "/v1/chat/completions", "ChatFailure('HTTP 503: busy')", 3, "", ""]
        )
    return tmp_path


def test_steps_are_read_per_user_count(results: Path) -> None:
    steps = read_steps(results)
    assert [s.users for s in steps] == [1, 4, 8]
    one, four, eight = steps
    assert (one.requests, one.failures, one.requests_per_s) == (20, 0, 2.0)
    assert (one.p50_ms, one.p90_ms, one.p99_ms) == (400, 500, 600)
    assert (one.ttft_p50_ms, one.ttft_p99_ms, one.tpot_p50_ms) == (40, 90, 8)
    assert one.output_tokens_per_s == pytest.approx(100.0)  # 50 tokens x 2 req/s
    assert four.requests == 60 and four.failures == 3 and four.failure_share == 0.05
    assert four.tpot_p50_ms is None  # no TPOT row
    assert eight.requests == 80  # from the lone _stats.csv
    assert [s.users for s in read_steps(results, users=[4])] == [4]


def test_failures_are_read_without_the_exception_wrapper(results: Path) -> None:
    [failure] = read_failures(results, [1, 4])
    assert (failure.users, failure.occurrences, failure.message) == (4, 3, "HTTP 503: busy")


def test_markdown_table_and_plots(results: Path) -> None:
    path = write_report(results, "unit test", ["a note"])
    text = path.read_text()
    assert text.startswith("# Load test: unit test")
    assert "- a note" in text
    assert "| 1 | 20 | 2.00 | 0 | 400 | 500 | 600 | 40 | 90 | 8 | 100.0 |" in text
    assert "| 4 | 60 | 6.00 | 3 (5.0%) | 700 | 900 | 1500 | 80 | 200 | – | 240.0 |" in text
    assert "| 8 | 80 | 8.00 | 0 | 900 | 1200 | 2000 | – | – | – | 240.0 |" in text
    assert "| 4 | 3 | HTTP 503: busy |" in text
    assert "9999" not in text
    for name in ("latency.png", "throughput.png"):
        png = (results / name).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000
        assert f"({name})" in text


def test_no_results_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path, "empty")
