"""The evaluation gate of ``loragate adapters promote``: is a candidate adapter version
not worse than the stable one on an eval set?

Each eval item gets one score per version, the share of the item's checks its answer
passes (``gateway.compare.scoring``): the facts (with ``must_not``), the style, the
citation, whichever the item has; a failed request passes none. The gate takes the
paired bootstrap interval of mean(candidate) - mean(stable) (``gateway.compare.stats``:
items resampled as pairs, seeded) and passes when its lower bound is at least
``-margin``: with margin 0, "not worse beyond noise".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.compare.eval_set import EvalItem
from gateway.compare.results import AnswerRecord
from gateway.compare.scoring import ItemScore, score_answer
from gateway.compare.stats import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Difference,
    paired_bootstrap,
)


def item_score(score: ItemScore) -> float:
    """The share of the item's checks the answer passes (0..1)."""
    checks = [c for c in (score.fact_correct, score.style_ok, score.citation_ok) if c is not None]
    return sum(checks) / len(checks) if checks else 0.0


@dataclass(frozen=True)
class GateResult:
    """The gate's figures and decision."""

    candidate_mean: float
    stable_mean: float
    difference: Difference
    margin: float
    confidence: float
    resamples: int
    seed: int

    @property
    def items(self) -> int:
        return self.difference.n

    @property
    def passed(self) -> bool:
        """Promote: the interval's lower bound is at least ``-margin``."""
        return self.items > 0 and self.difference.low >= -self.margin


def decide(
    candidate: npt.ArrayLike,
    stable: npt.ArrayLike,
    *,
    margin: float = 0.0,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> GateResult:
    """The gate over per-item scores given in the same item order."""
    x = np.asarray(candidate, dtype=float)
    y = np.asarray(stable, dtype=float)
    diff = paired_bootstrap(x, y, "mean", resamples=resamples, seed=seed, confidence=confidence)
    return GateResult(
        candidate_mean=float(x.mean()) if x.size else float("nan"),
        stable_mean=float(y.mean()) if y.size else float("nan"),
        difference=diff,
        margin=margin,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )


def item_scores(items: list[EvalItem], records: dict[str, AnswerRecord]) -> list[float]:
    """Each item's score (``item_score``) from its answer (``item id -> record``), in
    item order; an item without an answer scores 0."""
    scores = []
    for item in items:
        record = records.get(item.id)
        scores.append(item_score(score_answer(item, record)) if record is not None else 0.0)
    return scores


def format_gate(name: str, candidate: str, stable: str, result: GateResult) -> str:
    """The table the command prints: items, means, interval, decision."""
    d = result.difference
    verdict = "promote" if result.passed else "keep the stable version"
    rows = [
        ("adapter", name),
        ("candidate", f"{candidate}  mean score {result.candidate_mean:.3f}"),
        ("stable", f"{stable}  mean score {result.stable_mean:.3f}"),
        ("items", str(result.items)),
        (
            "candidate - stable",
            f"{d.estimate:+.3f}  {result.confidence:.0%} interval [{d.low:+.3f}, {d.high:+.3f}] "
            f"(paired bootstrap, {result.resamples} resamples, seed {result.seed})",
        ),
        ("rule", f"promote when the lower bound >= {-result.margin:+.3f} (margin {result.margin})"),
        ("decision", verdict),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
