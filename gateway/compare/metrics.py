"""The metrics a comparison reports, and their values per variant and per language.

Each metric reads one per-answer value (``None``: not measured for that answer, e.g.
style on an item without a style check, latency of a failed request) and summarises
it with a mean or a percentile. Quality metrics count a failed request as a wrong
answer; latency and token metrics leave failed requests out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gateway.compare.eval_set import EvalItem
from gateway.compare.results import AnswerRecord
from gateway.compare.scoring import ItemScore, score_answer
from gateway.compare.stats import Statistic, statistic


@dataclass(frozen=True)
class Scored:
    """One answer: its item, its saved record and its marks."""

    item: EvalItem
    record: AnswerRecord
    score: ItemScore


Extract = Callable[[Scored], float | None]


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


def _count(value: int | None, record: AnswerRecord) -> float | None:
    return float(value) if record.ok and value is not None else None


def _timing(value: float | None, record: AnswerRecord) -> float | None:
    return value if record.ok else None


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    extract: Extract
    kind: Statistic
    higher_is_better: bool
    unit: str
    """``share`` (0..1, shown as %), ``s`` (seconds) or ``tokens``."""
    quality: bool = True
    by_language: bool = True


def _share(key: str, label: str, extract: Extract, higher: bool = True) -> Metric:
    return Metric(key, label, extract, "mean", higher, "share")


def _cost(key: str, label: str, extract: Extract, kind: Statistic, unit: str) -> Metric:
    return Metric(key, label, extract, kind, False, unit, quality=False, by_language=False)


def _citation(s: Scored) -> float | None:
    # Not measured where retrieval did not run (no sources to cite, or the request
    # failed), so variants without RAG are not compared on it; a RAG answer that cites
    # nothing scores 0.
    return _flag(s.score.citation_ok) if s.record.citations else None


def _ttft(s: Scored) -> float | None:
    return _timing(s.record.ttft_s, s.record)


def _latency(s: Scored) -> float | None:
    return _timing(s.record.latency_s, s.record)


METRICS: tuple[Metric, ...] = (
    _share("fact_accuracy", "Fact accuracy", lambda s: _flag(s.score.fact_correct)),
    _share("fact_recall", "Fact recall", lambda s: s.score.fact_recall),
    _share("citation_accuracy", "Citation accuracy", _citation),
    _share("style_adherence", "Style adherence", lambda s: _flag(s.score.style_ok)),
    _share("no_fact_rate", "No fact at all", lambda s: _flag(s.score.no_fact), higher=False),
    _share("must_not_rate", "Says a must-not", lambda s: _flag(s.score.must_not_hit), False),
    _cost("ttft_p50", "TTFT p50", _ttft, "p50", "s"),
    _cost("ttft_p95", "TTFT p95", _ttft, "p95", "s"),
    _cost("latency_p50", "Latency p50", _latency, "p50", "s"),
    _cost("latency_p95", "Latency p95", _latency, "p95", "s"),
    _cost(
        "prompt_tokens",
        "Prompt tokens",
        lambda s: _count(s.record.prompt_tokens, s.record),
        "mean",
        "tokens",
    ),
    _cost(
        "completion_tokens",
        "Completion tokens",
        lambda s: _count(s.record.completion_tokens, s.record),
        "mean",
        "tokens",
    ),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


def score_all(
    items: list[EvalItem], variants: list[str], records: dict[tuple[str, str], AnswerRecord]
) -> dict[str, dict[str, Scored]]:
    """``variant -> item id -> Scored`` for every pair that has a saved answer."""
    scored: dict[str, dict[str, Scored]] = {v: {} for v in variants}
    for item in items:
        for variant in variants:
            record = records.get((item.id, variant))
            if record is not None:
                scored[variant][item.id] = Scored(item, record, score_answer(item, record))
    return scored


def value(metric: Metric, answers: list[Scored]) -> float | None:
    """The metric over ``answers`` (those that measure it); ``None`` if none do."""
    values = [v for v in (metric.extract(a) for a in answers) if v is not None]
    if not values:
        return None
    return float(statistic(np.asarray(values), metric.kind))


def measured(metric: Metric, answers: list[Scored]) -> int:
    return sum(metric.extract(a) is not None for a in answers)


def paired_values(
    metric: Metric, item_ids: list[str], a: dict[str, Scored], b: dict[str, Scored]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-item values of two variants in one item order (NaN where not measured)."""

    def column(answers: dict[str, Scored]) -> np.ndarray:
        out = []
        for item_id in item_ids:
            answer = answers.get(item_id)
            got = metric.extract(answer) if answer is not None else None
            out.append(np.nan if got is None else got)
        return np.asarray(out, dtype=float)

    return column(a), column(b)
