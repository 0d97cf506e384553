"""Turn saved answers into the comparison: tables, paired intervals, one sentence per
metric, written as ``report.md`` and ``report.json`` (plots: ``gateway.compare.plots``).

For each metric the variants are ranked; the best is compared with the runner-up by
a paired bootstrap. The sentence names the winner and the margin when the interval
excludes zero, and says "within noise" otherwise. Every pair of variants' difference,
with its interval, is in the JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

from gateway.compare.eval_set import EvalItem
from gateway.compare.metrics import (
    METRICS,
    Metric,
    Scored,
    measured,
    paired_values,
    score_all,
    value,
)
from gateway.compare.results import AnswerRecord
from gateway.compare.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Difference,
    paired_bootstrap,
)
from gateway.compare.variants import VariantSet

REPORT_MD = "report.md"
REPORT_JSON = "report.json"


@dataclass(frozen=True)
class Comparison:
    metric: str
    a: str
    b: str
    difference: Difference


@dataclass
class Report:
    items: list[EvalItem]
    variants: VariantSet
    scored: dict[str, dict[str, Scored]]
    overall: dict[str, dict[str, float | None]]
    counts: dict[str, dict[str, int]]
    by_language: dict[str, dict[str, dict[str, float | None]]]
    comparisons: list[Comparison]
    sentences: dict[str, str]
    seed: int
    resamples: int

    @property
    def languages(self) -> list[str]:
        return sorted({item.lang for item in self.items})

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variants.variants]


def build_report(
    items: list[EvalItem],
    variants: VariantSet,
    records: dict[tuple[str, str], AnswerRecord],
    *,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
) -> Report:
    names = [v.name for v in variants.variants]
    scored = score_all(items, names, records)
    overall = {v: {m.key: value(m, list(scored[v].values())) for m in METRICS} for v in names}
    counts = {v: {m.key: measured(m, list(scored[v].values())) for m in METRICS} for v in names}
    languages = sorted({item.lang for item in items})
    by_language = {
        v: {
            lang: {
                m.key: value(m, [s for s in scored[v].values() if s.item.lang == lang])
                for m in METRICS
                if m.by_language
            }
            for lang in languages
        }
        for v in names
    }
    ids = [item.id for item in items]
    comparisons = []
    for metric in METRICS:
        for a, b in combinations(names, 2):
            x, y = paired_values(metric, ids, scored[a], scored[b])
            diff = paired_bootstrap(x, y, metric.kind, resamples=resamples, seed=seed)
            comparisons.append(Comparison(metric.key, a, b, diff))
    report = Report(
        items, variants, scored, overall, counts, by_language, comparisons, {}, seed, resamples
    )
    report.sentences = {m.key: sentence(report, m) for m in METRICS}
    return report


def difference(report: Report, metric: str, a: str, b: str) -> Difference:
    """``metric(a) - metric(b)`` with its interval (either order)."""
    for c in report.comparisons:
        if c.metric == metric and (c.a, c.b) == (a, b):
            return c.difference
        if c.metric == metric and (c.a, c.b) == (b, a):
            d = c.difference
            return Difference(-d.estimate, -d.high, -d.low, d.n)
    raise KeyError((metric, a, b))


def fmt_value(metric: Metric, v: float | None) -> str:
    if v is None or math.isnan(v):
        return "n/a"
    if metric.unit == "share":
        return f"{v * 100:.0f}%"
    if metric.unit == "s":
        return f"{v:.2f} s"
    return f"{v:.0f}"


def fmt_diff(metric: Metric, v: float) -> str:
    if metric.unit == "share":
        return f"{abs(v) * 100:.0f} points"
    if metric.unit == "s":
        return f"{abs(v):.2f} s"
    return f"{abs(v):.0f} tokens"


def _signed(x: float, digits: int) -> str:
    rounded = round(x, digits) + 0.0  # no "-0": a value that rounds to zero is "+0"
    return f"{rounded:+.{digits}f}"


def fmt_interval(metric: Metric, d: Difference) -> str:
    scale, unit = (100.0, " points") if metric.unit == "share" else (1.0, "")
    digits = 2 if metric.unit == "s" else 0
    unit = " s" if metric.unit == "s" else unit
    return f"{_signed(d.low * scale, digits)} to {_signed(d.high * scale, digits)}{unit}"


def sentence(report: Report, metric: Metric) -> str:
    """One plain sentence: who wins this metric and by how much, or that it is noise."""
    have = [(v, report.overall[v][metric.key]) for v in report.names]
    ranked = [(v, x) for v, x in have if x is not None and not math.isnan(x)]
    if not ranked:
        return f"{metric.label}: not measured (no answer is checked for it)."
    ranked.sort(key=lambda p: p[1], reverse=metric.higher_is_better)
    best, best_value = ranked[0]
    if len(ranked) == 1:
        return f"{metric.label}: only {best} is measured ({fmt_value(metric, best_value)})."
    if all(x == best_value for _, x in ranked):
        shown = fmt_value(metric, best_value)
        return f"{metric.label}: no winner, all {len(ranked)} variants score {shown}."
    second, second_value = ranked[1]
    d = difference(report, metric.key, best, second)
    better = "higher" if metric.higher_is_better else "lower"
    if d.n > 0 and d.low == d.high == 0:
        return (
            f"{metric.label}: {best} and {second} are tied at "
            f"{fmt_value(metric, best_value)} (the same on each of {d.n} paired items)."
        )
    if d.n == 0 or not d.significant:
        return (
            f"{metric.label}: {best} ({fmt_value(metric, best_value)}) and {second} "
            f"({fmt_value(metric, second_value)}) are within noise of each other "
            f"(95% CI of the difference {fmt_interval(metric, d)}, {d.n} paired items)."
        )
    beaten = sum(difference(report, metric.key, best, other).significant for other, _ in ranked[1:])
    rest = (
        "; it beats every other variant beyond noise"
        if beaten == len(ranked) - 1
        else f"; it beats {beaten} of the {len(ranked) - 1} others beyond noise"
    )
    return (
        f"{metric.label}: {best} wins with {fmt_value(metric, best_value)}, "
        f"{fmt_diff(metric, d.estimate)} {better} than the runner-up {second} "
        f"({fmt_value(metric, second_value)}; 95% CI {fmt_interval(metric, d)}, "
        f"{d.n} paired items){rest}."
    )


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(report: Report, title: str = "loragate compare") -> str:
    names = report.names
    lines = [f"# {title}", ""]
    answers = sum(len(report.scored[v]) for v in names)
    failed = sum(s.score.error for v in names for s in report.scored[v].values())
    lines.append(
        f"{len(report.items)} items x {len(names)} variants: {answers} answers "
        f"({failed} failed requests, scored as wrong), languages: "
        f"{', '.join(report.languages)}; max_tokens {report.variants.max_tokens}, "
        "temperature 0."
    )
    for heading, group in (
        ("Quality", [m for m in METRICS if m.quality]),
        ("Speed and tokens", [m for m in METRICS if not m.quality]),
    ):
        lines += ["", f"## {heading}", ""]
        lines.append(_row(["variant", *(m.label for m in group)]))
        lines.append(_row(["---"] * (len(group) + 1)))
        for v in names:
            lines.append(_row([v, *(fmt_value(m, report.overall[v][m.key]) for m in group)]))
    lines += ["", "## Which variant wins", ""]
    lines += [f"- {report.sentences[m.key]}" for m in METRICS]
    lines += ["", "## By language", ""]
    quality = [m for m in METRICS if m.by_language]
    lines.append(_row(["variant", "language", *(m.label for m in quality)]))
    lines.append(_row(["---"] * (len(quality) + 2)))
    for v in names:
        for lang in report.languages:
            cells = [fmt_value(m, report.by_language[v][lang][m.key]) for m in quality]
            lines.append(_row([v, lang, *cells]))
    lines += ["", "## Variants", ""]
    for variant in report.variants.variants:
        rag = f", RAG {variant.rag.body()}" if variant.rag else ""
        system = ", own system prompt" if variant.system else ""
        lines.append(f"- **{variant.name}**: model `{variant.target}`{system}{rag}")
    lines += [
        "",
        f"Intervals: paired bootstrap over items, {report.resamples} resamples, seed "
        f"{report.seed}, {DEFAULT_CONFIDENCE:.0%}. Quality metrics count only items that "
        "check them (facts, source, style, must_not); latency and tokens leave failed "
        "requests out.",
        "",
    ]
    return "\n".join(lines)


def _clean(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else round(v, 6)


def as_json(report: Report) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": len(report.items),
        "languages": report.languages,
        "max_tokens": report.variants.max_tokens,
        "variants": [v.model_dump(exclude_none=True) for v in report.variants.variants],
        "answers": {v: len(report.scored[v]) for v in report.names},
        "failed": {v: sum(s.score.error for s in report.scored[v].values()) for v in report.names},
        "metrics": {
            m.key: {"label": m.label, "statistic": m.kind, "higher_is_better": m.higher_is_better}
            for m in METRICS
        },
        "overall": {v: {k: _clean(x) for k, x in row.items()} for v, row in report.overall.items()},
        "measured": report.counts,
        "by_language": {
            v: {lang: {k: _clean(x) for k, x in row.items()} for lang, row in langs.items()}
            for v, langs in report.by_language.items()
        },
        "comparisons": [
            {
                "metric": c.metric,
                "a": c.a,
                "b": c.b,
                "difference": _clean(c.difference.estimate),
                "ci_low": _clean(c.difference.low),
                "ci_high": _clean(c.difference.high),
                "paired_items": c.difference.n,
                "significant": c.difference.significant,
            }
            for c in report.comparisons
        ],
        "sentences": report.sentences,
        "bootstrap": {
            "resamples": report.resamples,
            "seed": report.seed,
            "confidence": DEFAULT_CONFIDENCE,
        },
    }


def write_report(report: Report, out: Path) -> list[Path]:
    """Write ``report.md`` and ``report.json`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / REPORT_MD, out / REPORT_JSON
    md.write_text(markdown(report), encoding="utf-8")
    js.write_text(json.dumps(as_json(report), indent=2, ensure_ascii=False) + "\n", "utf-8")
    return [md, js]
