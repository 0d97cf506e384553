"""Run every (item, variant) pair against a gateway with the OpenAI SDK.

Each pair is one streamed chat completion at temperature 0 (time to first token is
the first content delta; end-to-end latency the end of the stream; token counts from
``stream_options.include_usage``; ``citations`` from the chunk that carries them).
When an answer cites sources and the item names the document to cite, the cited
chunks' text is fetched from ``/v1/retrieval/search`` (same query, same collections)
so scoring can check that the chunk holds the fact.

Concurrency rule: at most ``concurrency`` requests are in flight (that many worker
tasks pull pairs from one queue; a 429 from the gateway is waited out, not recorded,
so a concurrency above the tenant's in-flight cap only queues); answers are appended
to the results file as each finishes, from the event loop, so stopping the run at any
moment keeps all finished answers, and a rerun sends only the pairs that are missing
or failed. Pairs run item by item (every variant of item 1, then of item 2, ...), so
a partial run is still a paired comparison.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import openai
from tqdm import tqdm

from gateway.compare.eval_set import EvalItem
from gateway.compare.results import AnswerRecord, CitedChunk, ResultsFile, item_fingerprint
from gateway.compare.scoring import cited_numbers
from gateway.compare.variants import Variant, VariantSet, fingerprint

SEARCH_TOP_K = 20
"""Chunks asked of the search endpoint to find the cited ones (the gateway's default
``retrieval.max_top_k``)."""

BUSY_WAIT_S = 600.0
"""How long one pair waits in all for a gateway that answers 429 (busy) before its
failure is recorded (the CLI passes ``--timeout``)."""
BUSY_FIRST_PAUSE_S = 0.5
BUSY_MAX_PAUSE_S = 15.0


@dataclass(frozen=True)
class Pair:
    item: EvalItem
    variant: Variant
    item_hash: str
    variant_hash: str


@dataclass
class RunSummary:
    """What a run did: pairs in the plan, already done before, answered now, failed."""

    planned: int = 0
    skipped: int = 0
    answered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def plan(
    items: Iterable[EvalItem], variants: VariantSet, results: ResultsFile, max_tokens: int
) -> tuple[list[Pair], int]:
    """The pairs still to answer, in item order, and how many were already done."""
    todo: list[Pair] = []
    skipped = 0
    hashes = {v.name: fingerprint(v, max_tokens) for v in variants.variants}
    for item in items:
        item_hash = item_fingerprint(item)
        for variant in variants.variants:
            if results.done(item.id, variant.name, item_hash, hashes[variant.name]):
                skipped += 1
            else:
                todo.append(Pair(item, variant, item_hash, hashes[variant.name]))
    return todo, skipped


async def run_pairs(
    client: openai.AsyncOpenAI,
    items: list[EvalItem],
    variants: VariantSet,
    results: ResultsFile,
    *,
    max_tokens: int,
    concurrency: int = 4,
    progress: bool = True,
    busy_wait_s: float = BUSY_WAIT_S,
) -> RunSummary:
    """Answer every pair not already in ``results``; append each answer as it ends."""
    todo, skipped = plan(items, variants, results, max_tokens)
    summary = RunSummary(planned=len(todo) + skipped, skipped=skipped)
    queue: asyncio.Queue[Pair] = asyncio.Queue()
    for pair in todo:
        queue.put_nowait(pair)
    bar = tqdm(total=len(todo), unit="answer", disable=not progress, desc="compare")

    async def worker() -> None:
        while True:
            try:
                pair = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            record = await answer(client, pair, max_tokens, busy_wait_s)
            results.append(record)
            summary.answered += 1
            if record.error is not None:
                summary.failed += 1
                summary.errors.append(f"{pair.item.id} / {pair.variant.name}: {record.error}")
            bar.update(1)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        bar.close()
    return summary


def request_body(pair: Pair, max_tokens: int) -> dict[str, Any]:
    """The chat request of ``pair`` (keyword arguments of ``chat.completions.create``)."""
    variant = pair.variant
    messages = pair.item.conversation()
    if variant.system:
        messages = [{"role": "system", "content": variant.system}, *messages]
    body: dict[str, Any] = {
        "model": variant.target,
        "messages": messages,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if variant.rag is not None:
        body["extra_body"] = {"rag": variant.rag.body()}
    return body


async def answer(
    client: openai.AsyncOpenAI, pair: Pair, max_tokens: int, busy_wait_s: float = BUSY_WAIT_S
) -> AnswerRecord:
    """One streamed answer; a failed request becomes a record with ``error`` set."""
    record = AnswerRecord(
        item_id=pair.item.id,
        variant=pair.variant.name,
        item_hash=pair.item_hash,
        variant_hash=pair.variant_hash,
    )
    parts: list[str] = []
    citations: list[dict[str, Any]] = []
    try:
        stream, started = await _create(client, request_body(pair, max_tokens), busy_wait_s)
        async for chunk in stream:
            extra = chunk.model_extra or {}
            if extra.get("citations"):
                citations = list(extra["citations"])
            if chunk.usage is not None:
                record.prompt_tokens = chunk.usage.prompt_tokens
                record.completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                if choice.delta.content:
                    if record.ttft_s is None:
                        record.ttft_s = time.perf_counter() - started
                    parts.append(choice.delta.content)
                if choice.finish_reason:
                    record.finish_reason = choice.finish_reason
        record.latency_s = time.perf_counter() - started
        record.text = "".join(parts)
        record.citations = [
            CitedChunk(
                number=int(c["number"]),
                source=str(c.get("source", "")),
                chunk_id=str(c.get("chunk_id", "")),
                collection=str(c.get("collection", "")),
            )
            for c in citations
        ]
    except openai.OpenAIError as exc:
        record.error = _describe(exc)
        record.text = "".join(parts)
        return record
    if pair.item.source and record.citations and cited_numbers(record.text):
        # The answer stands without them: a failed lookup leaves the chunks' text unknown
        # (citation accuracy then cannot confirm the fact), it does not void the answer.
        with suppress(openai.OpenAIError):
            await attach_chunk_texts(client, pair, record)
    return record


async def attach_chunk_texts(client: openai.AsyncOpenAI, pair: Pair, record: AnswerRecord) -> None:
    """Fill in the cited chunks' text from the search endpoint (same query and
    collections as the chat request). A chunk it does not return keeps ``text=None``
    (scored as not holding the fact)."""
    collections = sorted({c.collection for c in record.citations if c.collection})
    if not collections:
        return
    body: dict[str, Any] = {
        "collection": collections,
        "query": pair.item.query(),
        "top_k": SEARCH_TOP_K,
    }
    if pair.variant.rag is not None and pair.variant.rag.mode is not None:
        body["mode"] = pair.variant.rag.mode
    found: Any = await client.post("/retrieval/search", cast_to=object, body=body)
    texts = {hit["chunk_id"]: hit["text"] for hit in (found or {}).get("data", [])}
    for chunk in record.citations:
        chunk.text = texts.get(chunk.chunk_id)


async def _create(
    client: openai.AsyncOpenAI, body: dict[str, Any], busy_wait_s: float
) -> tuple[Any, float]:
    """The stream of ``body`` and when the accepted attempt started (latency counts from
    there). A 429 (the tenant's in-flight cap or rate limit) means the gateway refused
    before doing any work: wait (``Retry-After``, else doubling pauses) and ask again,
    for up to ``busy_wait_s`` in all, instead of recording a failure: the SDK's own two
    quick retries are too few when every slot is held by a minute-long CPU answer."""
    waited, pause = 0.0, BUSY_FIRST_PAUSE_S
    while True:
        started = time.perf_counter()
        try:
            return await client.chat.completions.create(**body), started
        except openai.RateLimitError as exc:
            if waited >= busy_wait_s:
                raise
            delay = min(max(pause, _retry_after(exc)), busy_wait_s - waited)
            await asyncio.sleep(delay)
            waited += delay
            pause = min(pause * 2, BUSY_MAX_PAUSE_S)


def _retry_after(exc: openai.APIStatusError) -> float:
    try:
        return max(0.0, float(exc.response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


def _describe(exc: openai.OpenAIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", body) if isinstance(body, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        return f"HTTP {exc.status_code}: {message or exc.message}"
    return f"{type(exc).__name__}: {exc}"
