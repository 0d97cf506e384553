"""The tenancy part of the config file: tenants, keys, aliases, policies, prompt library.

Validated as a whole; ``loragate config check`` prints each error with the path to the
bad field. Key material is never here in clear: only ``sha256$salt$digest`` hashes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from adapters.namespace_sources import AdapterSourceSpec
from adapters.traffic_split import weights_problem
from gateway.settings.keys import valid_hash
from retrieval import SearchMode

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TEMPLATE_VARIABLE = re.compile(r"\{([a-z_]+)\}")
TEMPLATE_VARIABLES = frozenset({"tenant", "date", "model", "sources"})

RESERVED_TENANTS = frozenset({"admin", "default"})
"""The gateway's own caller labels (``Caller.label``): no tenant may share them."""

DEFAULT_MAX_IN_FLIGHT = 64
"""A tenant's default cap on concurrent requests: a flood from one tenant queues in
front of its own cap, not in the engine ahead of every other tenant."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitConfig(Section):
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)


class BudgetPeriod(StrEnum):
    """Budget periods; each starts at a UTC day or month boundary."""

    DAY = "day"
    MONTH = "month"


class BudgetConfig(Section):
    """A spending cap per UTC day or month. A request that could pass it gets a 429
    ``insufficient_quota`` before any engine work (docs/budgets.md)."""

    period: BudgetPeriod = Field(description="day or month (UTC boundaries).")
    max_tokens: int | None = Field(
        default=None, ge=0, description="Prompt + completion tokens per period; null: no cap."
    )
    max_cost: float | None = Field(
        default=None, ge=0, description="Cost per period in the pricing currency; null: no cap."
    )


class PriceConfig(Section):
    """Prices per million tokens."""

    input: float = Field(ge=0, description="Per million prompt tokens.")
    cached_input: float | None = Field(
        default=None,
        ge=0,
        description="Per million prompt tokens from the prefix cache (default: the input price).",
    )
    output: float = Field(ge=0, description="Per million completion tokens.")


class PricingConfig(Section):
    """The price table: an adapter's entry, else its base model's, else ``default``."""

    currency: str = Field(default="USD", max_length=16)
    models: dict[str, PriceConfig] = Field(
        default={}, description="Base model id or adapter name -> prices."
    )
    default: PriceConfig | None = Field(
        default=None, description="Prices of models with no entry (none: they cost 0)."
    )


class KeyConfig(Section):
    id: str = Field(pattern=r"^[a-z0-9]{8,32}$", description="Public key id (safe to log).")
    hash: str = Field(description="From `loragate keys create`: sha256$<salt>$<digest>.")
    rate_limit: RateLimitConfig | None = None
    budget: BudgetConfig | None = None

    @field_validator("hash")
    @classmethod
    def _hash_format(cls, value: str) -> str:
        if not valid_hash(value):
            raise ValueError("must be a key hash from `loragate keys create` (sha256$salt$digest)")
        return value


class Range(Section):
    min: float | None = None
    max: float | None = None

    def contains(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class RagPolicyConfig(Section):
    """Retrieval that a policy turns on for every request it governs."""

    collections: list[str] = Field(
        min_length=1, description="Collections always searched (each in the tenant's list)."
    )
    top_k: int | None = Field(default=None, ge=1, description="Default: retrieval.top_k.")
    mode: SearchMode | None = Field(default=None, description="Default: retrieval.mode.")


class ToolsPolicyConfig(Section):
    """What a policy lets requests do with function tools."""

    allowed: bool = Field(default=True, description="false: requests with tools get a 400.")
    max_tools: int | None = Field(default=None, ge=1, description="Most tools per request.")
    functions: list[str] | None = Field(
        default=None, description="Function names requests may define (default: any)."
    )


class PolicyConfig(Section):
    """A system-prompt policy. Every field is optional; an alias's policy overrides its tenant's."""

    system_prompt: str | None = Field(
        default=None, description="Template; variables {tenant} {date} {model} {sources}."
    )
    prompts: list[str] | None = Field(
        default=None, description="Prompt library blocks ('name' or 'name@version'), in order."
    )
    client_system: Literal["keep", "merge", "drop"] | None = Field(
        default=None,
        description="Client system messages: keep (after the policy), merge (appended to "
        "the policy's system message) or drop.",
    )
    max_tokens: int | None = Field(default=None, ge=1, description="Completion budget cap.")
    max_prompt_tokens: int | None = Field(default=None, ge=1)
    temperature: Range | None = None
    top_p: Range | None = None
    stop: list[str] | None = None
    rag: RagPolicyConfig | None = Field(
        default=None,
        description="Answer every request from these collections, with cited sources. A "
        "request's own `rag` adds collections and may set top_k and mode.",
    )
    tools: ToolsPolicyConfig | None = Field(
        default=None, description="Forbid or limit function tools (default: allowed)."
    )

    @field_validator("system_prompt")
    @classmethod
    def _known_variables(cls, value: str | None) -> str | None:
        if value is not None:
            unknown = set(TEMPLATE_VARIABLE.findall(value)) - TEMPLATE_VARIABLES
            if unknown:
                raise ValueError(f"unknown template variables {sorted(unknown)}")
        return value

    def over(self, base: PolicyConfig) -> PolicyConfig:
        """This policy's fields where set, ``base``'s elsewhere (validated again, so
        nested sections stay models)."""
        merged = {**base.model_dump(exclude_none=True), **self.model_dump(exclude_none=True)}
        return PolicyConfig.model_validate(merged)


class AliasConfig(Section):
    model: str = Field(description="Base id, adapter name or adapter name@version.")
    policy: PolicyConfig | None = None
    split: dict[str, int] | None = Field(
        default=None,
        description="Weighted split between adapters (name -> percent, sum 100, 2 to 16 "
        "names, `model` among them), sticky per caller like a version split; each name "
        "must be one of the tenant's models.",
    )


class TenantConfig(Section):
    keys: list[KeyConfig] = []
    models: list[str] = Field(
        default=[], description="Base and adapter ids this tenant may use; '*' for all."
    )
    aliases: dict[str, AliasConfig] = {}
    default_model: str | None = Field(
        default=None, description="Used when a request names no model."
    )
    policy: PolicyConfig = PolicyConfig()
    rate_limit: RateLimitConfig | None = None
    budget: BudgetConfig | None = None
    max_in_flight: int | None = Field(
        default=DEFAULT_MAX_IN_FLIGHT,
        ge=1,
        description="Concurrent requests (fair share of the engine); null: no cap.",
    )
    collections: list[str] = Field(
        default=[], description="Retrieval collections it may search; '*' for all."
    )
    weight: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="Share of the engine when it is saturated, relative to other tenants.",
    )
    shadow_log: bool = Field(
        default=False,
        description="Keep the answers of shadowed requests (both versions: they hold user "
        "text) for comparison at GET /admin/adapters/{name}/shadow; false: counts only.",
    )
    adapter_source: AdapterSourceSpec | None = Field(
        default=None,
        description="Where this tenant's adapters are fetched from on their first request "
        "(docs/adapter-sources.md): a model name no alias, listed model or registered "
        "adapter answers is looked up there.",
    )

    @model_validator(mode="after")
    def _default_is_reachable(self) -> TenantConfig:
        if self.default_model is not None and not (
            self.default_model in self.aliases
            or self.default_model in self.models
            or "*" in self.models
        ):
            raise ValueError(f"default_model '{self.default_model}' is not in models or aliases")
        for name in self.aliases:
            if not NAME.match(name):
                raise ValueError(f"alias '{name}' must match [a-z0-9][a-z0-9._-]{{0,63}}")
        return self

    @field_validator("aliases")
    @classmethod
    def _alias_splits(
        cls, aliases: dict[str, AliasConfig], info: ValidationInfo
    ) -> dict[str, AliasConfig]:
        """An alias's split names the tenant's own adapters only (its ``models``)."""
        models = info.data.get("models", [])
        for alias, cfg in aliases.items():
            problem = _alias_split_problem(cfg, models)
            if problem is not None:
                raise ValueError(f"alias '{alias}': invalid split: {problem}")
        return aliases


def _alias_split_problem(alias: AliasConfig, models: list[str]) -> str | None:
    split = alias.split
    if split is None:
        return None
    problem = weights_problem(split, names=True)
    if problem is None and alias.model not in split:
        problem = f"`model` ({alias.model}) must be one of the names the split routes to"
    if problem is None and "*" not in models:
        foreign = [n for n in split if n not in models and n.partition("@")[0] not in models]
        if foreign:
            problem = f"{foreign[0]!r} is not one of the tenant's models"
    return problem


class AdminConfig(Section):
    keys: list[KeyConfig] = []


class TenancyConfig(Section):
    """Everything that a reload (SIGHUP or admin endpoint) may change."""

    admin: AdminConfig = AdminConfig()
    prompts: dict[str, dict[str, str]] = Field(
        default={}, description="Prompt library: name -> version -> template."
    )
    tenants: dict[str, TenantConfig] = {}
    pricing: PricingConfig = PricingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> TenancyConfig:
        self._check_unique_key_ids()
        for name, tenant in self.tenants.items():
            self._check_tenant(name, tenant)
        self._check_prompt_variables()
        return self

    def _check_unique_key_ids(self) -> None:
        seen: dict[str, str] = {}
        for owner, keys in [("admin", self.admin.keys)] + [
            (f"tenant '{t}'", c.keys) for t, c in self.tenants.items()
        ]:
            for key in keys:
                if key.id in seen:
                    raise ValueError(f"key id {key.id} is used by {seen[key.id]} and {owner}")
                seen[key.id] = owner

    def _check_tenant(self, name: str, tenant: TenantConfig) -> None:
        """The tenant's name, and its policies' prompts and collections."""
        if not NAME.match(name):
            raise ValueError(f"tenant '{name}' must match [a-z0-9][a-z0-9._-]{{0,63}}")
        if name in RESERVED_TENANTS:
            raise ValueError(
                f"tenant name '{name}' is reserved: usage, limits and metrics label "
                "the admin key and open mode's callers with it"
            )
        policies = [tenant.policy] + [a.policy for a in tenant.aliases.values() if a.policy]
        for policy in policies:
            for ref in policy.prompts or ():
                self.prompt(ref)
            for collection in policy.rag.collections if policy.rag else ():
                if collection not in tenant.collections and "*" not in tenant.collections:
                    raise ValueError(
                        f"tenant '{name}': policy collection '{collection}' is not in "
                        "its collections"
                    )

    def _check_prompt_variables(self) -> None:
        for name, versions in self.prompts.items():
            for version, text in versions.items():
                unknown = set(TEMPLATE_VARIABLE.findall(text)) - TEMPLATE_VARIABLES
                if unknown:
                    raise ValueError(
                        f"prompt {name}@{version}: unknown variables {sorted(unknown)}"
                    )

    def prompt(self, ref: str) -> str:
        """Template text of ``name`` (latest version) or ``name@version``."""
        name, _, version = ref.partition("@")
        versions = self.prompts.get(name)
        if not versions:
            raise ValueError(f"prompt '{name}' is not in the prompt library")
        if not version:
            version = max(versions, key=_version_key)
        if version not in versions:
            raise ValueError(f"prompt '{name}' has no version '{version}'")
        return versions[version]

    @property
    def enabled(self) -> bool:
        """Keys are required once any tenant or admin key is configured."""
        return bool(self.tenants or self.admin.keys)


def _version_key(version: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", version)
    return (int(digits) if digits else -1, version)
