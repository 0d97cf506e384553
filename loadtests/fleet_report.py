"""``bench_fleet``'s rows and table: one row per (system, base or adapters, round)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from loadtests.fleet_workload import Replay, percentile

VLLM_PREFIX = "vllm"


@dataclass(frozen=True)
class RunRow:
    system: str
    kind: str  # "base" or "adapters"
    round: int
    requests: int
    errors: int
    seconds: float
    output_tps: float
    ttft_p50: float | None
    ttft_p99: float | None
    cold: int
    cold_p50: float | None
    cold_p99: float | None
    loads: dict[str, float] = field(default_factory=dict)
    first_error: str | None = None

    @classmethod
    def of(
        cls,
        system: str,
        kind: str,
        round_: int,
        result: Replay,
        cold_positions: set[int],
        loads: dict[str, float],
    ) -> RunRow:
        """``cold_positions``: the requests that are their adapter's first in the round."""
        all_ttft = result.ttfts()
        cold = result.ttfts(cold_positions)
        return cls(
            system=system,
            kind=kind,
            round=round_,
            requests=len(result.outcomes),
            errors=result.errors,
            seconds=result.seconds,
            output_tps=result.output_tps,
            ttft_p50=percentile(all_ttft, 50),
            ttft_p99=percentile(all_ttft, 99),
            cold=len(cold),
            cold_p50=percentile(cold, 50),
            cold_p99=percentile(cold, 99),
            loads=loads,
            first_error=result.first_error(),
        )

    @property
    def cold_from(self) -> str:
        """Where a round's first request of an adapter finds it."""
        if self.kind == "base":
            return ""
        if self.system.startswith(VLLM_PREFIX):
            return "folder" if self.round == 1 else "folder, registered"
        return "bucket" if self.round == 1 else "disk cache"

    @property
    def loads_per_minute(self) -> float | None:
        if self.kind == "base":
            return None
        return self.loads.get("source", 0.0) / (self.seconds / 60)

    def line(self) -> str:
        """One progress line while the benchmark runs."""
        error = f"; first error: {self.first_error}" if self.first_error else ""
        return (
            f"{self.system} {self.kind} r{self.round}: {self.output_tps:.1f} tok/s, "
            f"TTFT p50 {ms(self.ttft_p50)} p99 {ms(self.ttft_p99)} ms, cold {self.cold} "
            f"p50 {ms(self.cold_p50)} p99 {ms(self.cold_p99)} ms, loads {self.loads}, "
            f"errors {self.errors}{error}"
        )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def render(rows: list[RunRow]) -> str:
    """The Markdown table, ratios to each system's base run, and the headline ratios
    (loragate in-process and remote against vLLM, round 1)."""
    base = {r.system: r.output_tps for r in rows if r.kind == "base"}
    lines = [
        "| system | model | round | requests | errors | output tok/s | / base | "
        "adapter loads/min | TTFT p50 ms | TTFT p99 ms | cold from | cold n | "
        "cold TTFT p50 ms | cold TTFT p99 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.output_tps / base[r.system] if r.system in base else None
        per_min = r.loads_per_minute
        lines.append(
            f"| {r.system} | {r.kind} | {r.round or ''} | {r.requests} | {r.errors} "
            f"| {r.output_tps:.1f} | {'' if ratio is None else f'{ratio:.2f}'} "
            f"| {'' if per_min is None else f'{per_min:.1f}'} | {ms(r.ttft_p50)} "
            f"| {ms(r.ttft_p99)} | {r.cold_from} | {r.cold or ''} "
            f"| {ms(r.cold_p50) if r.cold else ''} | {ms(r.cold_p99) if r.cold else ''} |"
        )
    lines += ["", *details(rows), *headline(rows)]
    return "\n".join(lines)


def details(rows: list[RunRow]) -> list[str]:
    """The gateway's own counts per adapter round: requests per tier, fetch time."""
    out = []
    for r in rows:
        if r.kind == "base" or r.system.startswith(VLLM_PREFIX):
            continue
        tiers = {k[5:]: int(v) for k, v in r.loads.items() if k.startswith("tier:") and v}
        fetches = r.loads.get("fetches", 0.0)
        mean = r.loads.get("fetch_s", 0.0) / fetches if fetches else None
        out.append(
            f"- {r.system}, round {r.round}: requests per tier {tiers}; "
            f"{int(fetches)} fetches, mean fetch-to-registered {ms(mean)} ms"
        )
    return out


def headline(rows: list[RunRow]) -> list[str]:
    first = {r.system: r for r in rows if r.kind == "adapters" and r.round == 1}
    theirs = next((r for s, r in first.items() if s.startswith(VLLM_PREFIX)), None)
    if theirs is None:
        return []
    out = []
    for system, ours in first.items():
        if system.startswith(VLLM_PREFIX):
            continue
        tps = ours.output_tps / theirs.output_tps
        p99 = (
            ours.cold_p99 / theirs.cold_p99
            if ours.cold_p99 is not None and theirs.cold_p99
            else None
        )
        out.append(
            f"- {system} / vLLM (round 1): output tok/s {tps:.2f}x (target >= 1: "
            f"{'met' if tps >= 1 else 'missed'}), cold TTFT p99 "
            f"{'-' if p99 is None else f'{p99:.2f}x'} (target < 1: "
            f"{'met' if p99 is not None and p99 < 1 else 'missed'})"
        )
    return out
