"""Paired bootstrap confidence intervals for the difference between two variants.

Both variants answered the same items, so items are resampled (with replacement) as
pairs: each resample draws item indices once and applies them to both variants'
values, which keeps the per-item correlation (an easy item is easy for both) out of
the interval. The statistic is the mean (accuracy, recall, token counts) or a
percentile (latency p50/p95). Seeded: the same inputs give the same interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Statistic = Literal["mean", "p50", "p95"]
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    """``statistic(a) - statistic(b)`` over ``n`` paired items, with its interval."""

    estimate: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero: the difference is not within noise."""
        return self.low > 0 or self.high < 0


def statistic(
    values: npt.ArrayLike, kind: Statistic, axis: int | None = None
) -> npt.NDArray[np.float64]:
    data = np.asarray(values, dtype=float)
    if kind == "mean":
        return np.asarray(data.mean(axis=axis))
    q = 50.0 if kind == "p50" else 95.0
    return np.asarray(np.percentile(data, q, axis=axis))


def paired_bootstrap(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    kind: Statistic = "mean",
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Difference:
    """Percentile bootstrap interval of ``statistic(a) - statistic(b)``.

    ``a`` and ``b`` are per-item values in the same item order; pairs where either is
    NaN (not measured, e.g. the latency of a failed request) are dropped first.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("a and b must be 1-D arrays of the same length (paired items)")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n == 0:
        return Difference(float("nan"), float("nan"), float("nan"), 0)
    estimate = float(statistic(x, kind) - statistic(y, kind))
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, size=(resamples, n))
    diffs = statistic(x[index], kind, axis=1) - statistic(y[index], kind, axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return Difference(estimate, float(low), float(high), n)
