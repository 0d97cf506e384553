"""Random draws a scenario asks for: lengths (fixed, uniform, normal) and popularity.

Every draw takes an explicit ``random.Random`` so a seeded run repeats exactly.
Length distributions are pydantic models, so a scenario file names them directly::

    output_tokens: {dist: normal, mean: 64, stddev: 16, min: 8, max: 128}
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

T = TypeVar("T")


class DistributionModel(BaseModel):
    """Base of the length distributions: strict fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedLength(DistributionModel):
    """Always the same length."""

    dist: Literal["fixed"] = "fixed"
    value: int = Field(ge=1)

    def sample(self, rng: random.Random) -> int:
        return self.value


class UniformLength(DistributionModel):
    """A whole number drawn uniformly from ``[min, max]``, both ends included."""

    dist: Literal["uniform"]
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.min, self.max)


class NormalLength(DistributionModel):
    """A rounded normal draw, clipped to ``[min, max]``."""

    dist: Literal["normal"]
    mean: float = Field(ge=1)
    stddev: float = Field(ge=0)
    min: int = Field(default=1, ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> NormalLength:
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self

    def sample(self, rng: random.Random) -> int:
        return min(self.max, max(self.min, round(rng.gauss(self.mean, self.stddev))))


def _bare_number_is_fixed(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"dist": "fixed", "value": value}
    return value


LengthDistribution = Annotated[
    FixedLength | UniformLength | NormalLength,
    Field(discriminator="dist"),
    BeforeValidator(_bare_number_is_fixed),
]


def zipf_weights(count: int, s: float) -> list[float]:
    """Normalised Zipf weights for ranks 1..count: ``w_k ∝ 1 / k**s`` (s=0 is uniform)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    if s < 0:
        raise ValueError("s must be >= 0")
    raw = [1.0 / (rank**s) for rank in range(1, count + 1)]
    total = sum(raw)
    return [w / total for w in raw]


class WeightedChoice(Generic[T]):
    """Draws items with fixed relative weights (a cumulative table and bisection)."""

    def __init__(self, items: Sequence[T], weights: Sequence[float]) -> None:
        if not items or len(items) != len(weights):
            raise ValueError("need one weight per item, and at least one item")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        self.items = list(items)
        self._cumulative = list(itertools.accumulate(weights))

    @property
    def probabilities(self) -> list[float]:
        total = self._cumulative[-1]
        previous = [0.0, *self._cumulative[:-1]]
        return [(c - p) / total for c, p in zip(self._cumulative, previous, strict=True)]

    def sample(self, rng: random.Random) -> T:
        point = rng.random() * self._cumulative[-1]
        index = bisect.bisect_right(self._cumulative, point)
        return self.items[min(index, len(self.items) - 1)]
