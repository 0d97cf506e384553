"""Rolling-restart verdict and report, from the locustfile's per-request records and the
orchestrator's restart timeline.

Each request is one of:

    completed   its stream ended with ``data: [DONE]`` and no error event
    refused     HTTP 429/503 before anything started (the caller may retry it)
    cut         the answer had begun (HTTP 200) and then ended with an error event,
                without ``[DONE]``, or with a broken connection: a lost stream
    failed      anything else (no answer, a 502/504 from HAProxy, another status)

The run passes when nothing was cut or failed, every gateway exited 0 after its
SIGTERM, and some requests completed. ``rolling-restart.md`` holds the counts (per
tenant and in all), the restart timeline and the requests sent while a gateway was
out of HAProxy's rotation; ``rolling-restart.png`` shows every request's TTFT over time
(cut and failed ones marked) and completions and refusals per second, with each
gateway's restart shaded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtests.report_reliability import Row, percentile

OUTCOMES = ("completed", "refused", "cut", "failed")
HEADINGS = ("completed", "refused before start", "cut mid-stream", "other failure")
PLOT_FILE = "rolling-restart.png"
REPORT_FILE = "rolling-restart.md"


def classify(row: Row) -> str:
    """One of :data:`OUTCOMES` for a request record."""
    if row.outcome == "ok":
        return "completed"
    if row.outcome == "refused":
        return "refused"
    if row.stream and row.status == 200:
        return "cut"
    return "failed"


@dataclass(frozen=True)
class Restart:
    """One gateway's restart, in seconds on the requests' clock (``t_s``)."""

    gateway: str
    signal: str
    in_flight: int  # streams mid-body on it when the signal went (its metrics)
    signal_s: float
    exit_s: float
    exit_code: int
    ready_s: float  # its /ready answered 200
    up_s: float  # HAProxy's checks put it back in rotation

    @property
    def drain_s(self) -> float:
        return self.exit_s - self.signal_s


@dataclass(frozen=True)
class Verdict:
    counts: Counter[str]
    exit_codes: list[int]

    @property
    def passed(self) -> bool:
        clean_exits = all(code == 0 for code in self.exit_codes)
        return (
            clean_exits
            and not self.counts["cut"]
            and not self.counts["failed"]
            and bool(self.counts["completed"])
        )

    def line(self) -> str:
        pairs = zip(OUTCOMES, HEADINGS, strict=True)
        figures = ", ".join(f"{self.counts[o]} {h}" for o, h in pairs)
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}: {figures}; gateway exit codes {self.exit_codes}"


def verdict(rows: list[Row], restarts: list[Restart]) -> Verdict:
    return Verdict(Counter(classify(r) for r in rows), [r.exit_code for r in restarts])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _count_row(label: str, rows: list[Row]) -> str:
    counts = Counter(classify(r) for r in rows)
    ttft = [r.first_ms for r in rows if r.outcome == "ok"]
    cells = " | ".join(str(counts[o]) for o in OUTCOMES)
    p50, p99 = percentile(ttft, 50), percentile(ttft, 99)
    return f"| {label} | {len(rows)} | {cells} | {_ms(p50)} | {_ms(p99)} |"


def _timeline(rows: list[Row], restarts: list[Restart]) -> list[str]:
    lines = [
        "",
        "| gateway | signal | streams mid-body on it | drain s | exit code | back /ready s "
        "| UP in HAProxy s | requests sent meanwhile | of which completed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for event in restarts:
        during = [r for r in rows if event.signal_s <= r.t <= event.up_s]
        done = sum(classify(r) == "completed" for r in during)
        lines.append(
            f"| {event.gateway} | SIG{event.signal} at {event.signal_s:.1f} s "
            f"| {event.in_flight} | {event.drain_s:.1f} | {event.exit_code} "
            f"| {event.ready_s - event.signal_s:.1f} | {event.up_s - event.signal_s:.1f} "
            f"| {len(during)} | {done} |"
        )
    return lines


def _plot(rows: list[Row], restarts: list[Restart], tenants: list[str], path: Path) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name in tenants:
        mine = [r for r in rows if r.tenant == name and r.outcome == "ok"]
        top.plot([r.t for r in mine], [r.first_ms for r in mine], ".", ms=3, label=name)
    for outcome, marker in (("cut", "rx"), ("failed", "kx")):
        bad = [r for r in rows if classify(r) == outcome]
        if bad:
            top.plot([r.t for r in bad], [r.latency_ms for r in bad], marker, label=outcome)
    end = int(max([r.t for r in rows] + [e.up_s for e in restarts] + [0])) + 1
    per_second = {o: [0] * end for o in OUTCOMES}
    for r in rows:
        per_second[classify(r)][min(int(r.t), end - 1)] += 1
    for outcome, heading in zip(OUTCOMES, HEADINGS, strict=True):
        if outcome == "completed" or any(per_second[outcome]):
            bottom.plot(range(end), per_second[outcome], "-", label=f"{heading}/s")
    for axis in (top, bottom):
        for event in restarts:
            axis.axvspan(event.signal_s, event.up_s, color="orange", alpha=0.2)
            axis.axvline(event.signal_s, color="orange", lw=1)
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper right", fontsize=8)
    for event in restarts:
        top.annotate(
            f"{event.gateway} SIG{event.signal}", (event.signal_s, 1),
            xycoords=("data", "axes fraction"), xytext=(2, -12), textcoords="offset points",
            fontsize=8,
        )  # fmt: skip
    top.set_yscale("log")
    top.set_ylabel("TTFT (completed) or latency (x: cut, failed), ms")
    top.set_title("Rolling restart behind HAProxy (shaded: a gateway out of rotation)")
    bottom.set_ylabel("requests per second (by send time)")
    bottom.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    out: Path,
    rows: list[Row],
    restarts: list[Restart],
    tenants: list[str],
    notes: list[str],
) -> Path:
    """``out/rolling-restart.md`` and its plot; returns the Markdown file's path."""
    result = verdict(rows, restarts)
    lines = ["# Rolling restart: gateways behind HAProxy, restarted one at a time", ""]
    lines += [f"- {note}" for note in notes]
    lines += ["", f"**{result.line()}**", ""]
    lines += [
        "| tenant | requests | " + " | ".join(HEADINGS) + " | TTFT p50 ms | TTFT p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_count_row(t, [r for r in rows if r.tenant == t]) for t in tenants]
    lines.append(_count_row("all", rows))
    lines += _timeline(rows, restarts)
    bad = Counter(r.status for r in rows if classify(r) in ("cut", "failed"))
    if bad:
        statuses = ", ".join(f"{s or 'no answer'} x{n}" for s, n in sorted(bad.items()))
        lines += ["", f"HTTP statuses of the cut or failed requests: {statuses}"]
    if rows:
        _plot(rows, restarts, tenants, out / PLOT_FILE)
        lines += ["", f"![rolling restart]({PLOT_FILE})"]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
