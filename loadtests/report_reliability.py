"""Reliability report: per-tenant latency over time, refusals, noisy-neighbour ratio,
memory, from the locustfile's ``<prefix>_requests.csv`` (and ``memory.csv``).

    reliability.md           per tenant: requests, completed, refused (429/503), failed
                             (anything else: timeouts, cut streams), TTFT p50/p99,
                             refusal latency p50/p99; the noisy-neighbour ratio
    reliability_latency.png  TTFT (streamed) or latency (not) of every request over time
    reliability_refusals.png refusals per second, per tenant

Noisy neighbour: when a tenant starts late (``start_after_s``), each other tenant's
TTFT p99 before it started ("alone") is compared with its p99 once it runs (after
``WARMUP_S``), in the same run: the ratio the issue targets at <= 1.5x.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from loadtests.report import step_prefix
from loadtests.scenario import Scenario
from loadtests.stat_names import REQUESTS_SUFFIX

WARMUP_S = 10.0
"""After a late tenant starts: left out of the steady "under load" window (its users'
first burst arrives at once); the table also gives the ratio with it included."""
MEMORY_FILE = "memory.csv"


@dataclass
class Row:
    t: float
    tenant: str
    stream: bool
    outcome: str
    status: int
    latency_ms: float
    ttft_ms: float | None

    @property
    def first_ms(self) -> float:
        """Time to first token when streamed, else the whole latency."""
        return self.ttft_ms if self.ttft_ms is not None else self.latency_ms


@dataclass
class TenantStats:
    rows: list[Row] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.rows)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[k]


def read_rows(path: Path) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for r in csv.DictReader(handle):
            rows.append(
                Row(
                    t=float(r["t_s"]),
                    tenant=r["tenant"],
                    stream=r["stream"] == "1",
                    outcome=r["outcome"],
                    status=int(r["status"] or 0),
                    latency_ms=float(r["latency_ms"]),
                    ttft_ms=float(r["ttft_ms"]) if r["ttft_ms"] else None,
                )
            )
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def _ratio_lines(rows: list[Row], scenario: Scenario) -> list[str]:
    late = [t for t in scenario.tenants if t.start_after_s > 0]
    if not late or not rows:
        return []
    t0 = min(r.t for r in rows)
    start = t0 + min(t.start_after_s for t in late)
    lines = ["", "### Noisy neighbour (same run)", ""]
    admission = (scenario.paced.gateway.get("admission") if scenario.paced else None) or {}
    if admission:  # which queue settings gave these figures (headroom on or off)
        settings = ", ".join(f"{k}={v}" for k, v in sorted(admission.items()))
        lines += [f"Gateway admission: {settings}.", ""]
    load = os.getloadavg()
    lines += [f"Load average when reported: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.", ""]
    lines += [
        "| tenant | TTFT p99 alone ms | TTFT p99 under load (steady) ms | ratio "
        "| with the ramp ms | ratio | target |"
    ]
    lines += ["|---|---|---|---|---|---|---|"]
    for tenant in scenario.tenants:
        if tenant.start_after_s > 0:
            continue
        mine = [r for r in rows if r.tenant == tenant.name and r.outcome == "ok"]
        alone = percentile([r.first_ms for r in mine if r.t < start], 99)
        loaded = percentile([r.first_ms for r in mine if r.t >= start + WARMUP_S], 99)
        ramp = percentile([r.first_ms for r in mine if r.t >= start], 99)
        lines.append(
            f"| {tenant.name} | {_ms(alone)} | {_ms(loaded)} | {_ratio(loaded, alone)} "
            f"| {_ms(ramp)} | {_ratio(ramp, alone)} | <= 1.5x |"
        )
    return lines


def _memory_lines(out: Path) -> list[str]:
    path = out / MEMORY_FILE
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        samples = [(float(r["t_s"]), float(r["rss_mib"])) for r in csv.DictReader(handle)]
    if len(samples) < 4:
        return []
    settled = samples[len(samples) // 4 :]  # after start-up and the first requests
    first, last = settled[0][1], settled[-1][1]
    peak = max(v for _, v in settled)
    return [
        "",
        f"Gateway RSS over the run (from {settled[0][0]:.0f} s): {first:.0f} MiB -> "
        f"{last:.0f} MiB (peak {peak:.0f} MiB, change {last - first:+.0f} MiB).",
    ]


def _plot(rows: list[Row], tenants: list[str], out: Path, title: str) -> list[str]:
    if not rows:
        return []
    t0 = min(r.t for r in rows)
    fig, axis = plt.subplots(figsize=(10, 5))
    for name in tenants:
        mine = [r for r in rows if r.tenant == name and r.outcome == "ok"]
        axis.plot([r.t - t0 for r in mine], [r.first_ms for r in mine], ".", ms=3, label=name)
    axis.set_xlabel("seconds")
    axis.set_ylabel("TTFT (streamed) or latency, ms")
    axis.set_yscale("log")
    axis.set_title(f"Per-tenant latency over time\n{title}"[:200])
    axis.grid(True, alpha=0.3)
    axis.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out / "reliability_latency.png", dpi=110)
    plt.close(fig)
    fig, axis = plt.subplots(figsize=(10, 4))
    end = int(max(r.t for r in rows) - t0) + 1
    for name in tenants:
        per_second = [0] * end
        for r in rows:
            if r.tenant == name and r.outcome == "refused":
                per_second[int(r.t - t0)] += 1
        axis.plot(range(end), per_second, "-", label=f"{name} refused/s")
    axis.set_xlabel("seconds")
    axis.set_ylabel("refusals per second (429/503)")
    axis.grid(True, alpha=0.3)
    axis.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out / "reliability_refusals.png", dpi=110)
    plt.close(fig)
    return ["", "![latency](reliability_latency.png)", "![refusals](reliability_refusals.png)"]


def write_reliability_report(
    out: Path, scenario: Scenario, title: str, users: list[int]
) -> Path | None:
    """``out/reliability.md`` for the last step that logged requests (None: none did)."""
    paths = [out / f"{step_prefix(u)}{REQUESTS_SUFFIX}" for u in users]
    paths = [p for p in paths if p.exists()]
    if not paths:
        return None
    rows = read_rows(paths[-1])
    tenants = [t.name for t in scenario.tenants]
    by_tenant = {name: TenantStats([r for r in rows if r.tenant == name]) for name in tenants}
    lines = [f"# Reliability: {title}", "", f"Requests of `{paths[-1].name}`.", ""]
    lines += [
        "| tenant | requests | completed | refused | failed | TTFT p50 ms | TTFT p99 ms "
        "| refusal p50 ms | refusal p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, stats in by_tenant.items():
        ok = [r.first_ms for r in stats.rows if r.outcome == "ok"]
        refused = [r.latency_ms for r in stats.rows if r.outcome == "refused"]
        lines.append(
            f"| {name} | {len(stats.rows)} | {stats.count('ok')} | {stats.count('refused')} "
            f"| {stats.count('failed')} | {_ms(percentile(ok, 50))} | {_ms(percentile(ok, 99))} "
            f"| {_ms(percentile(refused, 50))} | {_ms(percentile(refused, 99))} |"
        )
    statuses = sorted({r.status for r in rows if r.outcome != "ok"})
    if statuses:
        lines += [
            "",
            "HTTP statuses of the requests that did not complete: "
            + ", ".join(
                f"{s or 'no answer'} x{sum(r.status == s and r.outcome != 'ok' for r in rows)}"
                for s in statuses
            ),
        ]
    lines += _ratio_lines(rows, scenario)
    lines += _memory_lines(out)
    lines += _plot(rows, tenants, out, title)
    report = out / "reliability.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
