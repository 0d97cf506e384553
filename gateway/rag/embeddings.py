"""``EmbeddingService``: ``/v1/embeddings`` on the retrieval store's own embedder.

check inputs (count)                 400 input, before anything else
admit(caller) -> route(model)        429 / the identical 404 for unknown and forbidden
embedder = the store's (loads once)  503 while it cannot be loaded
decode token ids, count tokens       400 input (bad id, too long), 400 dimensions
reserve_exact(tokens) -> TPM         429 over the caller's tokens per minute
batcher.embed(texts) -> vectors      combined with concurrent requests, off the loop
(exit) usage recorded, tokens charged, metrics
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from gateway.errors import EngineFailureError, InvalidRequestError, ModelNotFoundError
from gateway.metrics import GatewayMetrics
from gateway.model_catalog import ServedModel
from gateway.protocol.common import ModelCard
from gateway.protocol.embeddings import CreateEmbeddingRequest, CreateEmbeddingResponse
from gateway.rag.embedding_batcher import BatchFigures, EmbeddingBatcher
from gateway.rag.provider import BUNDLED_NAMES, StoreProvider
from gateway.settings import LimitSettings, RetrievalSettings
from gateway.tenancy.directory import Caller
from gateway.tenancy.gatekeeper import Gatekeeper
from retrieval import Embedder
from retrieval.embedding import chunk_tokenizer_of, normalize_rows
from retrieval.tokens import Cl100kTokenizer, cl100k

logger = logging.getLogger(__name__)

INLINE_RENDER_FLOATS = 16_384
"""Responses with more numbers than this are rendered on a worker thread."""


def served_embedder_id(settings: RetrievalSettings) -> str:
    """The model id of the configured embedder: ``embedder_served_name``, else the name
    the embedder gives itself (what collections record), in lower case."""
    if settings.embedder_served_name:
        return settings.embedder_served_name
    if settings.embedder_name:
        return settings.embedder_name.lower()
    if settings.embedder_dir is not None:
        return settings.embedder_dir.name.lower()
    return BUNDLED_NAMES[settings.embedder].lower()


class InputTokenizer(Protocol):
    """Counts an input's tokens; ``max_tokens``: the most the embedder reads (None: any)."""

    max_tokens: int | None

    def count(self, texts: Sequence[str]) -> list[int]: ...


def input_tokenizer_of(embedder: Embedder) -> InputTokenizer:
    """The embedder's own tokens when it has a tokenizer that bounds what it reads,
    else cl100k (no limit): USE sizes its chunks in MiniLM's word-pieces but reads
    any length, so its inputs are counted in cl100k."""
    own = chunk_tokenizer_of(embedder)
    if own is not None and own.max_tokens is not None and hasattr(own, "count"):
        return own  # type: ignore[return-value]
    return Cl100kTokenizer()


@dataclass(frozen=True)
class _Loaded:
    """The embedder as this service uses it, built once it has loaded."""

    embedder: Embedder
    tokenizer: InputTokenizer
    batcher: EmbeddingBatcher


class EmbeddingService:
    """Built once at start-up. Serves the embedder that the retrieval store holds (the same
    instance RAG searches with; it loads at start-up or on first use, see ``StoreProvider``).

    Concurrency rule: call ``create`` and ``close`` on the event loop. Decoding and token
    counting run on the loop's default executor, the embedder on the batcher's own thread.
    """

    def __init__(
        self,
        retrieval: RetrievalSettings,
        limits: LimitSettings,
        provider: StoreProvider,
        gatekeeper: Gatekeeper,
        metrics: GatewayMetrics,
    ) -> None:
        self.model_id = served_embedder_id(retrieval)
        self._settings = retrieval
        self._limits = limits
        self._provider = provider
        self._gatekeeper = gatekeeper
        self._metrics = metrics
        self._created = int(time.time())
        self._loaded: _Loaded | None = None

    @property
    def embedder(self) -> Embedder | None:
        """The embedder served, once a request has loaded it (the store's own instance)."""
        return self._loaded.embedder if self._loaded is not None else None

    def card(self) -> ModelCard:
        return ModelCard(id=self.model_id, created=self._created, root=self.model_id)

    def resolve(self, model: str) -> ServedModel:
        """The embedding model, or the same 404 as any unknown model."""
        if model != self.model_id:
            raise ModelNotFoundError(model)
        return ServedModel(id=model)

    async def close(self) -> None:
        if self._loaded is not None:
            await self._loaded.batcher.close()

    async def create(self, caller: Caller, request: CreateEmbeddingRequest) -> bytes:
        """The response body (JSON) for ``request`` by ``caller``."""
        inputs = request.texts_or_ids()
        if len(inputs) > self._limits.max_embedding_inputs:
            raise InvalidRequestError(
                f"At most {self._limits.max_embedding_inputs} inputs per request; "
                f"this one has {len(inputs)}.",
                param="input",
            )
        async with self._gatekeeper.admit(caller, 0) as ticket:
            route = self._gatekeeper.route(ticket, request.model, self.resolve)
            loaded = await self._load()
            size = self._dimensions(request.dimensions, loaded.embedder)
            texts, counts = await asyncio.to_thread(self._prepare, inputs, loaded.tokenizer)
            total = sum(counts)
            await ticket.reserve_exact(total, 0)
            ticket.engine_start()
            try:
                vectors = await loaded.batcher.embed(texts)
            except Exception as exc:
                raise EngineFailureError("The embedder failed on this request.") from exc
        if size != vectors.shape[1]:
            vectors = normalize_rows(vectors[:, :size])
        build = CreateEmbeddingResponse.build
        args = (route.reported_id, vectors, request.encoding_format, total)
        if vectors.size <= INLINE_RENDER_FLOATS:
            return build(*args).model_dump_json().encode()
        return await asyncio.to_thread(lambda: build(*args).model_dump_json().encode())

    async def _load(self) -> _Loaded:
        """The store's embedder with its tokenizer and batcher (on the loop: no race)."""
        store = await self._provider.get()
        loaded = self._loaded
        if loaded is not None and loaded.embedder is store.embedder:
            return loaded
        embedder = store.embedder
        tokenizer = await asyncio.to_thread(input_tokenizer_of, embedder)
        if self._loaded is not None and self._loaded.embedder is embedder:
            return self._loaded  # another request built it while this one waited
        batcher = EmbeddingBatcher(
            embedder.embed_documents,
            max_inputs=self._settings.embed_batch_size,
            max_wait=self._settings.embed_batch_wait_ms / 1000,
            on_batch=self._observe,
        )
        self._loaded = _Loaded(embedder, tokenizer, batcher)
        return self._loaded

    def _observe(self, figures: BatchFigures) -> None:
        self._metrics.embedding_batch(figures.inputs, figures.seconds)

    def _dimensions(self, asked: int | None, embedder: Embedder) -> int:
        native = embedder.dimension
        if asked is None or asked == native:
            return native
        allowed = sorted({d for d in self._settings.embedder_dimensions if d < native} | {native})
        if asked in allowed:
            return asked
        sizes = ", ".join(str(d) for d in allowed)
        raise InvalidRequestError(
            f"Model '{self.model_id}' gives embeddings of {sizes} dimensions, not {asked}.",
            param="dimensions",
            code="invalid_value",
        )

    def _prepare(
        self, inputs: list[str] | list[list[int]], tokenizer: InputTokenizer
    ) -> tuple[list[str], list[int]]:
        """Texts (token ids decoded) and their token counts; 400 naming ``input`` for an id
        cl100k does not have, or an input longer than the limit. Blocking."""
        texts = [
            item if isinstance(item, str) else _decode(cast(list[int], item), i)
            for i, item in enumerate(inputs)
        ]
        counts = tokenizer.count(texts)
        limit = self._limits.max_embedding_input_tokens
        if tokenizer.max_tokens is not None:
            limit = min(limit, tokenizer.max_tokens)
        for index, count in enumerate(counts):
            if count > limit:
                raise InvalidRequestError(
                    f"Input {index} has {count} tokens; model '{self.model_id}' takes at most "
                    f"{limit} per input. Send shorter inputs (with LangChain's "
                    "OpenAIEmbeddings: a smaller embedding_ctx_length).",
                    param="input",
                    code="invalid_value",
                )
            if count == 0:
                raise InvalidRequestError(
                    f"Input {index} has no tokens to embed.", param="input", code="invalid_value"
                )
        return texts, counts


def _decode(ids: list[int], index: int) -> str:
    """cl100k ids as text: ordinary tokens only (special and unassigned ids: a 400)."""
    end = _first_special_id()
    bad = next((i for i in ids if not 0 <= i < end), None)
    if bad is None:
        try:
            return cl100k().decode(ids)
        except KeyError:  # an unassigned id below the special ones
            bad = next(i for i in ids if not _decodable(i))
    raise InvalidRequestError(
        f"Input {index} holds the token id {bad}, which is not an ordinary cl100k_base token.",
        param="input",
        code="invalid_value",
    )


def _decodable(token: int) -> bool:
    try:
        cl100k().decode_single_token_bytes(token)
    except KeyError:
        return False
    return True


@functools.cache
def _first_special_id() -> int:
    encoding = cl100k()
    return min(encoding.encode_single_token(s) for s in encoding.special_tokens_set)
