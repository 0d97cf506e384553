"""``limits`` (request size bounds), ``admission`` (the queue in front of the engine)
and ``limits_store`` (where rate limits and in-flight caps live)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    SecretStr,
)

from gateway.settings.engine import (
    EngineSettings,
    RemoteEngineSettings,
)
from gateway.settings.section import Section


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
