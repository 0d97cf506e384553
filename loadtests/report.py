"""Turns the Locust CSVs of a stepped run into a Markdown table and PNG plots.

Reads one CSV per user count, as ``loadtests.run`` names them: ``u<users>_summary.csv``
(final statistics, written by the locustfile), else Locust's ``u<users>_stats.csv``
(a snapshot that can miss the last second). Writes ``report.md``, ``latency.png`` and
``throughput.png`` next to them::

    python -m loadtests.report loadtest-results --title "demo scenario, loragate"

Output tokens/s is Locust's average "content size" of the chat rows (the locustfile
records output tokens there) times their requests/s.
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import dataclass
from pathlib import Path

from loadtests.stat_names import (
    CHAT_NAME,
    E2E_TYPE,
    FAILURES_SUFFIX,
    SUMMARY_SUFFIX,
    TPOT_TYPE,
    TTFT_TYPE,
)

STEP_FILE = re.compile(r"^u(\d+)(_summary|_stats)\.csv$")
FAILURE_REPR = re.compile(r"""^\w+\((['"])(.*)\1\)$""")
Row = dict[str, str]


@dataclass(frozen=True)
class StepStats:
    """One user count's numbers (milliseconds; None where nothing was measured)."""

    users: int
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    output_tokens_per_s: float

    @property
    def failure_share(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def step_prefix(users: int) -> str:
    """File name prefix of one step's Locust output."""
    return f"u{users:03d}"


def _number(value: str | None) -> float | None:
    if value is None or value.strip() in ("", "N/A"):
        return None
    return float(value)


def _find(rows: list[Row], request_type: str) -> Row | None:
    return next((r for r in rows if r["Type"] == request_type and r["Name"] == CHAT_NAME), None)


def read_step(path: Path, users: int) -> StepStats:
    """The numbers of one Locust ``*_stats.csv``."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows: list[Row] = list(csv.DictReader(handle))
    e2e, ttft, tpot = (_find(rows, t) for t in (E2E_TYPE, TTFT_TYPE, TPOT_TYPE))
    empty: Row = {}
    e2e_row = e2e or empty
    rps = _number(e2e_row.get("Requests/s")) or 0.0
    tokens_per_request = _number(e2e_row.get("Average Content Size")) or 0.0
    return StepStats(
        users=users,
        requests=int(_number(e2e_row.get("Request Count")) or 0),
        failures=int(_number(e2e_row.get("Failure Count")) or 0),
        requests_per_s=rps,
        p50_ms=_number(e2e_row.get("50%")),
        p90_ms=_number(e2e_row.get("90%")),
        p99_ms=_number(e2e_row.get("99%")),
        ttft_p50_ms=_number((ttft or empty).get("50%")),
        ttft_p99_ms=_number((ttft or empty).get("99%")),
        tpot_p50_ms=_number((tpot or empty).get("50%")),
        output_tokens_per_s=rps * tokens_per_request,
    )


def read_steps(folder: Path, users: list[int] | None = None) -> list[StepStats]:
    """The steps in ``folder`` (only those of ``users`` if given), by user count."""
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = STEP_FILE.match(path.name)
        if not match or (users is not None and int(match.group(1)) not in users):
            continue
        count = int(match.group(1))
        if count not in files or match.group(2) + ".csv" == SUMMARY_SUFFIX:
            files[count] = path
    return [read_step(files[count], count) for count in sorted(files)]


@dataclass(frozen=True)
class FailureCount:
    """How often one failure message occurred at one user count."""

    users: int
    occurrences: int
    message: str


def read_failures(folder: Path, users: list[int]) -> list[FailureCount]:
    """The failures of each step, from the locustfile's ``_summary_failures.csv``."""
    found = []
    for count in users:
        path = folder / f"{step_prefix(count)}{FAILURES_SUFFIX}"
        if not path.exists():
            continue
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                match = FAILURE_REPR.match(row["Error"])
                message = match.group(2) if match else row["Error"]
                found.append(FailureCount(count, int(row["Occurrences"]), message))
    return found


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def markdown_table(steps: list[StepStats]) -> str:
    header = (
        "| users | requests | req/s | failures | p50 ms | p90 ms | p99 ms "
        "| TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | output tok/s |"
    )
    lines = [header, "|" + "---:|" * 11]
    for s in steps:
        failures = f"{s.failures} ({s.failure_share:.1%})" if s.failures else "0"
        lines.append(
            f"| {s.users} | {s.requests} | {s.requests_per_s:.2f} | {failures} "
            f"| {_ms(s.p50_ms)} | {_ms(s.p90_ms)} | {_ms(s.p99_ms)} "
            f"| {_ms(s.ttft_p50_ms)} | {_ms(s.ttft_p99_ms)} | {_ms(s.tpot_p50_ms)} "
            f"| {s.output_tokens_per_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


def markdown_failures(failures: list[FailureCount]) -> str:
    lines = ["| users | occurrences | failure |", "---:|---:|---|"]
    for f in sorted(failures, key=lambda f: (f.users, -f.occurrences, f.message)):
        message = f.message.replace("|", "\\|")
        lines.append(f"| {f.users} | {f.occurrences} | {message} |")
    lines[1] = "|" + lines[1]
    return "\n".join(lines) + "\n"


def markdown_report(
    steps: list[StepStats], title: str, notes: list[str], failures: list[FailureCount]
) -> str:
    parts = [f"# Load test: {title}", ""]
    parts += [f"- {note}" for note in notes]
    parts += [
        "",
        markdown_table(steps),
        "Latencies are end to end, measured on the client; TTFT and TPOT come from "
        "streamed requests only. Tokens are the server's `usage.completion_tokens`.",
        "",
    ]
    if failures:
        parts += ["## Failures", "", markdown_failures(failures)]
    parts += [
        "![latency percentiles vs users](latency.png)",
        "",
        "![throughput vs users](throughput.png)",
        "",
    ]
    return "\n".join(parts)


def write_report(
    folder: Path, title: str, notes: list[str] | None = None, users: list[int] | None = None
) -> Path:
    """Write ``report.md`` and the PNG plots for the steps in ``folder``."""
    from loadtests.report_plots import plot_latency, plot_throughput

    steps = read_steps(folder, users)
    if not steps:
        raise FileNotFoundError(f"no u<users>_summary.csv or _stats.csv files in {folder}")
    plot_latency(steps, folder / "latency.png", title)
    plot_throughput(steps, folder / "throughput.png", title)
    path = folder / "report.md"
    failures = read_failures(folder, [s.users for s in steps])
    path.write_text(markdown_report(steps, title, notes or [], failures), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.report", description=__doc__)
    parser.add_argument("folder", type=Path, help="folder with u<users>_summary.csv files")
    parser.add_argument("--title", default="chat completions")
    args = parser.parse_args(argv)
    path = write_report(args.folder, args.title)
    print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
