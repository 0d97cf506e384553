"""``Settings``: every section together, read from a YAML file and ``LORAGATE_*``.

Environment variables override the file (``LORAGATE_ENGINE__MAX_LORAS=8``). Validators
refuse settings that would serve wrongly rather than fail later inside the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.settings.adapter_cache import AdapterCacheSettings
from gateway.settings.engine import (
    EngineSettings,
    VLLMEngineSettings,
)
from gateway.settings.limits import (
    AdmissionSettings,
    LimitSettings,
    LimitStoreSettings,
)
from gateway.settings.loading import read_config_file
from gateway.settings.model import AdapterSettings, ModelSettings
from gateway.settings.rag import RetrievalSettings
from gateway.settings.registry import RegistrySettings
from gateway.settings.rollouts import RolloutSettings
from gateway.settings.server import (
    AdminSettings,
    MetricsSettings,
    ServerSettings,
)
from gateway.settings.stores import ResponsesSettings, SharedStoreSettings
from gateway.settings.tenancy import (
    AdminConfig,
    PricingConfig,
    TenancyConfig,
    TenantConfig,
)
from gateway.settings.tracing import TracingSettings


class Settings(BaseSettings):
    """Everything ``loragate serve`` needs. Build with ``Settings.load(path)``."""

    model_config = SettingsConfigDict(
        env_prefix="LORAGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        protected_namespaces=(),
    )

    model: ModelSettings
    engine: EngineSettings = VLLMEngineSettings()
    adapters: list[AdapterSettings] = []
    server: ServerSettings = ServerSettings()
    limits: LimitSettings = LimitSettings()
    registry: RegistrySettings = RegistrySettings()
    adapter_cache: AdapterCacheSettings = AdapterCacheSettings()
    admin: AdminSettings = AdminSettings()
    metrics: MetricsSettings = MetricsSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    limits_store: LimitStoreSettings = LimitStoreSettings()
    shared_store: SharedStoreSettings = SharedStoreSettings()
    admission: AdmissionSettings = AdmissionSettings()
    responses: ResponsesSettings = ResponsesSettings()
    tracing: TracingSettings = TracingSettings()
    rollouts: RolloutSettings = RolloutSettings()
    usage_db: Path | None = Field(
        default=None,
        description="SQLite file of usage records (default: usage.db in registry.data_dir).",
    )
    prompts: dict[str, dict[str, str]] = Field(
        default={}, description="Prompt library: name -> version -> template."
    )
    tenants: dict[str, TenantConfig] = Field(
        default={}, description="Tenants; with none, the gateway serves without keys."
    )
    pricing: PricingConfig = Field(
        default=PricingConfig(),
        description="Prices per million tokens per model and adapter (docs/budgets.md).",
    )

    def tenancy(self) -> TenancyConfig:
        """The part a reload may change (validated again as a whole)."""
        return TenancyConfig(
            admin=AdminConfig(keys=self.admin.keys),
            prompts=self.prompts,
            tenants=self.tenants,
            pricing=self.pricing,
        )

    @property
    def collections_root(self) -> Path:
        """Where the retrieval collections live."""
        return self.retrieval.root or self.registry.data_dir / "collections"

    @field_validator("engine", mode="before")
    @classmethod
    def _default_engine_kind(cls, value: Any) -> Any:
        """``engine.kind`` may be left out: the in-process vLLM engine."""
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "vllm", **value}
        return value

    @model_validator(mode="after")
    def _safe_access(self) -> Settings:
        tenancy = self.tenancy()  # cross-field checks: key ids, prompt references
        self.server.check_open_access(tenancy)
        return self

    @model_validator(mode="after")
    def _adapter_sources_allowed(self) -> Settings:
        """A tenant's folder or URI source obeys the registry's own source rules."""
        reg = self.registry
        roots = [root.resolve() for root in reg.allowed_roots]
        for name, tenant in self.tenants.items():
            spec = tenant.adapter_source
            if spec is None:
                continue
            if spec.path is not None and not any(
                spec.path.resolve().is_relative_to(root) for root in roots
            ):
                raise ValueError(
                    f"tenant '{name}': adapter_source.path is not under registry.allowed_roots"
                )
            protocol = spec.uri.partition("://")[0] if spec.uri else None
            if protocol is not None and protocol not in reg.allowed_protocols:
                raise ValueError(
                    f"tenant '{name}': adapter_source.uri protocol '{protocol}' is not in "
                    "registry.allowed_protocols"
                )
        return self

    @model_validator(mode="after")
    def _unique_model_ids(self) -> Settings:
        seen = {self.model.served_name}
        for adapter in self.adapters:
            if adapter.name in seen:
                raise ValueError(f"model id '{adapter.name}' is used twice")
            seen.add(adapter.name)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file, which arrives as init kwargs.
        return env_settings, init_settings

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> Settings:
        """Read ``path`` (YAML), apply ``overrides`` (whole sections) and validate.

        Raises ``ConfigFileError`` when the file is not a YAML mapping of sections,
        pydantic's ``ValidationError`` when a field is wrong, ``OSError`` when unreadable.
        """
        data = read_config_file(Path(path)) if path is not None else {}
        data.update(overrides)
        return cls(**data)
