"""Reciprocal rank fusion: merge rankings whose scores are not comparable."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Iterable[Sequence[Key]],
    *,
    k: int = 60,
    limit: int | None = None,
    weights: Sequence[float] | None = None,
) -> list[tuple[Key, float]]:
    """Fuse ranked lists of ids: ``score(id) = sum(w / (k + rank))`` with rank from 1
    and ``w`` the ranking's weight (``weights``, default 1 each).

    Returns (id, score) best first; ties keep the order of first appearance, so the
    result is deterministic. ``k = 60`` is the constant of Cormack et al. (2009).
    """
    scores: dict[Key, float] = {}
    for number, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[number]
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    fused = sorted(scores.items(), key=lambda pair: -pair[1])
    return fused if limit is None else fused[:limit]
