"""``TrafficSplit``: weighted, sticky traffic between versions of one adapter.

A split ``{"v3": 90, "v4": 10}`` sends a request for ``model: "<name>"`` to one of the
named versions. The choice is sticky per caller: a stable hash of (adapter name,
caller key) picks a bucket in ``[0, 100)``, and the versions own consecutive ranges of
buckets in version order (registration order, ``lora_int_id``): ``v3`` owns 0-89,
``v4`` 90-99. The same caller always lands in the same bucket, so a conversation does
not flip; changing the weights moves only the buckets whose range changed (90/10 ->
80/20 moves the callers of buckets 80-89, nobody else).

A split may also carry a ``shadow`` (a share of its requests is sent a second time to a
candidate version whose answer the caller never sees) and ``rollback`` bounds (the
gateway ends the split by itself when a canary version's error rate or latency passes
them). A split with a shadow may name a single version at weight 100.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.errors import InvalidAdapterNameError
from adapters.naming import check_name, check_version

BUCKETS = 100
"""Weights are integer percentages: one bucket per percent."""
MAX_SPLIT_VERSIONS = 16


class ShadowConfig(BaseModel):
    """Send ``percent`` of the split's requests to ``version`` too; only the chosen
    version's answer reaches the caller."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(description="The candidate version that gets the copies.")
    percent: int = Field(ge=1, le=100, description="Share of requests copied, 1 to 100.")


class RollbackBounds(BaseModel):
    """When a canary (every split version but the active one) is rolled back: once it has
    served ``min_requests`` since the split was set, its error rate (5xx answers) above
    ``max_error_rate``, or its duration per completion token above ``max_latency_ratio``
    times the active version's over the same window, ends the split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    max_latency_ratio: float | None = Field(default=None, gt=1)
    min_requests: int = Field(default=50, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _some_bound(self) -> RollbackBounds:
        if self.max_error_rate is None and self.max_latency_ratio is None:
            raise ValueError("rollback needs max_error_rate or max_latency_ratio")
        return self


class SplitOptions(BaseModel):
    """What a split may carry besides its weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shadow: ShadowConfig | None = None
    rollback: RollbackBounds | None = None


class TrafficSplit(BaseModel):
    """The persisted split of one adapter name (part of the registry's document)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    weights: dict[str, int] = Field(description="version -> weight; weights sum to 100.")
    shadow: ShadowConfig | None = None
    rollback: RollbackBounds | None = None

    @model_validator(mode="after")
    def _shape(self) -> TrafficSplit:
        problem = weights_problem(self.weights, shadowed=self.shadow is not None)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def versions(self) -> set[str]:
        """Every version the split sends requests to: its weights' and its shadow's."""
        shadow = {self.shadow.version} if self.shadow is not None else set()
        return set(self.weights) | shadow


def weights_problem(
    weights: Mapping[str, object], *, shadowed: bool = False, names: bool = False
) -> str | None:
    """Why ``weights`` is not a valid split (None when it is): at least two versions
    (one is enough with a shadow), at most ``MAX_SPLIT_VERSIONS``, integer weights 0-100
    summing to 100. ``names``: the keys are adapter names (``name`` or ``name@version``:
    a tenant alias's split between adapters), not versions."""
    fewest = 1 if shadowed else 2
    kind = "names" if names else "versions"
    if not fewest <= len(weights) <= MAX_SPLIT_VERSIONS:
        return f"a split names between {fewest} and {MAX_SPLIT_VERSIONS} {kind}"
    for key, weight in weights.items():
        try:
            if names:
                name, _, version = key.partition("@")
                check_name(name)
                if version:
                    check_version(version)
            else:
                check_version(key)
        except InvalidAdapterNameError as exc:
            return exc.message
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            return f"the weight of {key!r} must be an integer from 0 to 100"
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
