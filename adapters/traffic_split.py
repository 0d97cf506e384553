"""``TrafficSplit``: weighted, sticky traffic between versions of one adapter.

A split ``{"v3": 90, "v4": 10}`` sends a request for ``model: "<name>"`` to one of the
named versions. The choice is sticky per caller: a stable hash of (adapter name,
caller key) picks a bucket in ``[0, 100)``, and the versions own consecutive ranges of
buckets in version order (registration order, ``lora_int_id``): ``v3`` owns 0-89,
``v4`` 90-99. The same caller always lands in the same bucket, so a conversation does
not flip; changing the weights moves only the buckets whose range changed (90/10 ->
80/20 moves the callers of buckets 80-89, nobody else).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adapters.errors import InvalidAdapterNameError
from adapters.naming import check_version

BUCKETS = 100
"""Weights are integer percentages: one bucket per percent."""
MAX_SPLIT_VERSIONS = 16


class TrafficSplit(BaseModel):
    """The persisted split of one adapter name (part of the registry's document)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    weights: dict[str, int] = Field(description="version -> weight; weights sum to 100.")

    @field_validator("weights")
    @classmethod
    def _shape(cls, weights: dict[str, int]) -> dict[str, int]:
        problem = weights_problem(weights)
        if problem is not None:
            raise ValueError(problem)
        return weights


def weights_problem(weights: Mapping[str, object]) -> str | None:
    """Why ``weights`` is not a valid split (None when it is): at least two versions,
    at most ``MAX_SPLIT_VERSIONS``, integer weights 0-100 summing to 100."""
    if not 2 <= len(weights) <= MAX_SPLIT_VERSIONS:
        return f"a split names between 2 and {MAX_SPLIT_VERSIONS} versions"
    for version, weight in weights.items():
        try:
            check_version(version)
        except InvalidAdapterNameError as exc:
            return exc.message
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            return f"the weight of {version!r} must be an integer from 0 to 100"
    total = sum(w for w in weights.values() if isinstance(w, int))
    if total != BUCKETS:
        return f"the weights must sum to {BUCKETS} (they sum to {total})"
    return None


def bucket(name: str, caller: str) -> int:
    """The caller's bucket in ``[0, 100)`` for adapter ``name``: stable across
    processes and restarts (sha256, not Python's salted ``hash``)."""
    digest = hashlib.sha256(f"{name}\x00{caller}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def choose(ordered: Sequence[tuple[str, int]], slot: int) -> str:
    """The version whose cumulative range holds bucket ``slot``; ``ordered`` is the
    split's (version, weight) pairs in version order."""
    upper = 0
    for version, weight in ordered:
        upper += weight
        if slot < upper:
            return version
    raise ValueError(f"bucket {slot} is outside the split's ranges")
