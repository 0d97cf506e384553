"""A load-test scenario: who calls, which models, how long, how often streamed or RAG.

Read from YAML with :func:`load_scenario`; every field is checked before a request is
sent. Keys may be written inline or named by environment variable (``api_key_env``)
so a scenario file need not hold secrets. The gateway does not check keys yet; they
are sent anyway (``Authorization: Bearer``), so the same scenario works once it does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from loadtests.distributions import FixedLength, LengthDistribution

# Body fields the workload sets itself; ``extra_body`` may not override them.
RESERVED_BODY_FIELDS = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "rag"}
)


class ScenarioModel(BaseModel):
    """Base of the scenario sections: unknown fields are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Tenant(ScenarioModel):
    """One caller: its key, how much of the traffic it sends, which models it calls."""

    name: str = Field(min_length=1)
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the key (instead of api_key)."
    )
    weight: float = Field(default=1.0, gt=0, description="Relative share of the requests.")
    models: list[str] | None = Field(
        default=None,
        description="Subset of the scenario's models this tenant calls (all if unset).",
    )
    users: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Users of its own (a pinned tenant): every tenant or none has them; "
        "the run's user count is then their sum.",
    )
    start_after_s: float = Field(
        default=0.0, ge=0, description="Pinned users start this long after the run."
    )
    think_time: ThinkTime | None = Field(
        default=None, description="A pinned tenant's own think time (default: the scenario's)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> Tenant:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self

    def resolve_key(self, environ: Mapping[str, str]) -> Tenant:
        """This tenant with ``api_key_env`` replaced by the key it names."""
        if self.api_key_env is None:
            return self
        if not environ.get(self.api_key_env):
            raise ValueError(
                f"tenant {self.name!r}: environment variable {self.api_key_env} is unset"
            )
        key = SecretStr(environ[self.api_key_env])
        return self.model_copy(update={"api_key": key, "api_key_env": None})


class ModelMix(ScenarioModel):
    """Models (base or adapters) by popularity rank: ``names[0]`` is the most popular."""

    names: list[str] = Field(min_length=1)
    popularity: Literal["uniform", "zipf"] = "uniform"
    zipf_s: float = Field(
        default=1.0, ge=0, description="Zipf exponent s: weight of rank k is 1/k^s."
    )

    @model_validator(mode="after")
    def _unique(self) -> ModelMix:
        if len(set(self.names)) != len(self.names):
            raise ValueError("model names must be unique")
        return self


class RagMix(ScenarioModel):
    """Share of requests that carry the ``rag`` extension object, and what it asks for."""

    share: float = Field(default=0.0, ge=0, le=1)
    collection: str | None = None
    top_k: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _collection_when_used(self) -> RagMix:
        if self.share > 0 and not self.collection:
            raise ValueError("rag.collection is required when rag.share > 0")
        return self


class ThinkTime(ScenarioModel):
    """Seconds a user waits between two requests, drawn uniformly from ``[min, max]``."""

    min: float = Field(default=0.0, ge=0)
    max: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> ThinkTime:
        if self.max < self.min:
            raise ValueError("max must be >= min")
        return self


Tenant.model_rebuild()


class PacedTarget(ScenarioModel):
    """``python -m loadtests.run --start paced``: a gateway (remote mode) in front of a
    paced fake replica (``loadtests.paced_replica``); keys are made for the tenants."""

    token_delay_s: float = Field(default=0.02, ge=0, description="Replica: seconds a token.")
    tokens: int = Field(default=32, ge=1, description="Replica: tokens per answer (at most).")
    first_token_s: float = Field(
        default=0.0, ge=0, description="Replica: prefill time before the first token."
    )
    gateway: dict[str, Any] = Field(
        default_factory=dict,
        description="Gateway config sections (e.g. admission), merged into the one made.",
    )


class RequestOptions(ScenarioModel):
    """Sampling fields sent with every request, and extra body fields (e.g. vLLM's)."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_reserved_fields(self) -> RequestOptions:
        clash = sorted(RESERVED_BODY_FIELDS & self.extra_body.keys())
        if clash:
            raise ValueError(f"extra_body may not set {clash}: the scenario sets them")
        return self


class Scenario(ScenarioModel):
    """Everything one load test sends. See ``loadtests/scenarios/demo.yaml``."""

    name: str = "scenario"
    seed: int = 0
    tenants: list[Tenant] = Field(default_factory=lambda: [Tenant(name="anonymous")])
    models: ModelMix
    prompt_tokens: LengthDistribution = FixedLength(value=64)
    output_tokens: LengthDistribution = FixedLength(value=64)
    stream_share: float = Field(default=1.0, ge=0, le=1)
    rag: RagMix = RagMix()
    think_time: ThinkTime = ThinkTime()
    request: RequestOptions = RequestOptions()
    paced: PacedTarget | None = None

    @property
    def pinned_users(self) -> int | None:
        """Users of a scenario whose tenants each have their own (None: not pinned)."""
        if self.tenants[0].users is None:
            return None
        return sum(t.users or 0 for t in self.tenants)

    def tenant_of_user(self, number: int) -> Tenant | None:
        """The tenant Locust user ``number`` is pinned to (None: not a pinned scenario)."""
        total = self.pinned_users
        if total is None:
            return None
        k = number % total
        for tenant in self.tenants:
            if k < (tenant.users or 0):
                return tenant
            k -= tenant.users or 0
        return self.tenants[-1]

    @model_validator(mode="after")
    def _tenants_call_known_models(self) -> Scenario:
        if not self.tenants:
            raise ValueError("at least one tenant is required")
        if len({t.users is None for t in self.tenants}) > 1:
            raise ValueError("give users to every tenant or to none")
        names = [t.name for t in self.tenants]
        if len(set(names)) != len(names):
            raise ValueError("tenant names must be unique")
        known = set(self.models.names)
        for tenant in self.tenants:
            if tenant.models is not None:
                unknown = sorted(set(tenant.models) - known)
                if not tenant.models or unknown:
                    raise ValueError(
                        f"tenant {tenant.name!r}: models must be a non-empty subset of "
                        f"models.names (unknown: {unknown})"
                    )
        return self


def parse_scenario(data: Any, environ: Mapping[str, str] | None = None) -> Scenario:
    """Validate a scenario mapping and resolve keys named by environment variables."""
    if not isinstance(data, dict):
        raise ValueError("a scenario file must hold a mapping")
    scenario = Scenario.model_validate(data)
    env = os.environ if environ is None else environ
    tenants = [t.resolve_key(env) for t in scenario.tenants]
    return scenario.model_copy(update={"tenants": tenants})


def load_scenario(path: str | Path, environ: Mapping[str, str] | None = None) -> Scenario:
    """Read and validate a scenario YAML file."""
    with open(path, encoding="utf-8") as handle:
        return parse_scenario(yaml.safe_load(handle), environ)
