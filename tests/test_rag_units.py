"""Units of the gateway's RAG half: plans, placement, config checks, the store
provider, and how library errors become OpenAI errors."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.pipeline.chat_prompt import ChatPrompt
from gateway.protocol.chat import RagOptions
from gateway.rag.errors import RetrievalUnavailableError, as_gateway_error
from gateway.rag.grounding import (
    fit_sources,
    last_user_turn,
    plan_for,
    with_sources,
)
from gateway.rag.provider import StoreProvider
from gateway.settings import RetrievalSettings
from gateway.settings.tenancy import PolicyConfig, RagPolicyConfig, Range, TenancyConfig
from gateway.tenancy.policy import Policy
from retrieval import CollectionStore, SearchHit
from retrieval import errors as lib
from tests.support.embedders import WordHashEmbedder


def test_a_policy_plan_always_applies_and_a_request_adds_to_it() -> None:
    assert plan_for(None, None) is None
    policy = RagPolicyConfig(collections=["manuals"], top_k=2, mode="bm25")
    only_policy = plan_for(None, policy)
    assert only_policy is not None
    assert (only_policy.collections, only_policy.top_k, only_policy.mode) == (
        ["manuals"],
        2,
        "bm25",
    )
    request = RagOptions(collection=["faq", "manuals"], top_k=4)
    both = plan_for(request, policy)
    assert both is not None
    assert (both.collections, both.top_k, both.mode) == (["manuals", "faq"], 4, "bm25")
    alone = plan_for(RagOptions(collection="faq"), None)
    assert alone is not None and (alone.top_k, alone.mode) == (None, None)


def test_the_query_is_the_last_user_turn() -> None:
    messages = [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "  the follow-up  "},
        {"role": "assistant", "content": "prefill"},
    ]
    assert last_user_turn(messages) == "the follow-up"
    assert last_user_turn([{"role": "system", "content": "x"}]) == ""


def test_sources_go_into_the_last_user_turn_as_data() -> None:
    convo = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "q"},
    ]
    placed = with_sources(convo, "SOURCES")
    assert [m["role"] for m in placed] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in placed] == ["policy", "first", "answer", "SOURCES\n\nq"]
    # no user turn at all: the sources become one
    assert with_sources([{"role": "system", "content": "p"}], "S")[-1] == {
        "role": "user",
        "content": "S",
    }


class WordRenderer:
    """One token per word plus four per message; records what it rendered."""

    def __init__(self) -> None:
        self.rendered: list[list[dict[str, str]]] = []

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        self.rendered.append(messages)
        return [1] * sum(len(m["content"].split()) + 4 for m in messages)

    def count(self, text: str) -> int:
        return len(text.split())


def test_the_policy_stays_the_only_system_text_with_sources() -> None:
    renderer = WordRenderer()
    policy = Policy(PolicyConfig(system_prompt="POLICY for {tenant}"), TenancyConfig())
    messages = [{"role": "user", "content": "how do I reset it"}]
    ChatPrompt(
        renderer,  # type: ignore[arg-type]
        policy,
        messages,
        tenant="acme",
        model="m",
    ).render("the sources")
    assert renderer.rendered[-1] == [
        {"role": "system", "content": "POLICY for acme"},
        {"role": "user", "content": "the sources\n\nhow do I reset it"},
    ]


def test_fitting_never_exceeds_the_room() -> None:
    renderer = WordRenderer()
    policy = Policy(PolicyConfig(), TenancyConfig())
    messages = [{"role": "user", "content": "question"}]
    prompt = ChatPrompt(
        renderer,  # type: ignore[arg-type]
        policy,
        messages,
        tenant="t",
        model="m",
    )
    hits = [
        SearchHit(f"c{i}", "d", "Doc", "doc.md", (), "word " * 80, 1.0 / (i + 1), 0, 400)
        for i in range(6)
    ]
    for room in (60, 120, 200, 400, 1000):
        ids, context = fit_sources(
            hits, prompt.render, renderer.count, room=room, context_tokens=10_000
        )
        if context.citations:
            assert len(ids) <= room
        else:
            assert "No sources were found" in renderer.rendered[-1][-1]["content"]
    ids, context = fit_sources(hits, prompt.render, renderer.count, room=10_000, context_tokens=100)
    assert len(context.citations) == 1 and renderer.count(context.text) <= 100


def test_policy_rag_collections_must_belong_to_the_tenant() -> None:
    tenant: dict[str, Any] = {
        "collections": ["manuals"],
        "aliases": {"bot": {"model": "m", "policy": {"rag": {"collections": ["other"]}}}},
    }
    with pytest.raises(ValidationError, match="'other' is not in its collections"):
        TenancyConfig.model_validate({"tenants": {"acme": tenant}})
    tenant["collections"] = ["*"]
    TenancyConfig.model_validate({"tenants": {"acme": tenant}})
    with pytest.raises(ValidationError):
        RagPolicyConfig(collections=[])


def test_an_alias_policy_over_the_tenant_policy_keeps_nested_sections_as_models() -> None:
    tenant = PolicyConfig(temperature=Range(max=0.5), system_prompt="tenant")
    alias = PolicyConfig(rag=RagPolicyConfig(collections=["manuals"]))
    merged = alias.over(tenant)
    assert isinstance(merged.temperature, Range) and merged.temperature.max == 0.5
    assert isinstance(merged.rag, RagPolicyConfig) and merged.system_prompt == "tenant"


def test_retrieval_settings_refuse_inconsistent_values() -> None:
    with pytest.raises(ValidationError, match="top_k"):
        RetrievalSettings(top_k=30, max_top_k=20)
    with pytest.raises(ValidationError, match="chunk_overlap"):
        RetrievalSettings(chunk_tokens=64, chunk_overlap=40)


async def test_the_store_is_built_once_and_a_failed_build_is_retried(tmp_path: Path) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def factory() -> CollectionStore:
        calls.append(1)
        gate.wait(5)
        if len(calls) == 1:
            raise OSError("model folder missing")
        return CollectionStore(tmp_path, WordHashEmbedder())

    provider = StoreProvider(factory)
    first = [asyncio.ensure_future(provider.get()) for _ in range(3)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*first, return_exceptions=True)
    assert all(isinstance(r, RetrievalUnavailableError) for r in results)
    assert len(calls) == 1 and not provider.ready
    store = await provider.get()
    assert isinstance(store, CollectionStore) and await provider.get() is store
    assert len(calls) == 2 and provider.ready


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (lib.CollectionNotFoundError("collection 'x' does not exist"), 404, "collection_not_found"),
        (lib.DocumentNotFoundError("no"), 404, "document_not_found"),
        (lib.InvalidCollectionNameError("bad"), 400, "invalid_collection_name"),
        (lib.SourceUnavailableError("a.md", "no such file"), 400, "source_unavailable"),
        (lib.FileTooLargeError("a.md", "too big"), 413, "file_too_large"),
        (lib.UnsupportedFileTypeError("a.exe", "type"), 422, "unsupported_file_type"),
        (lib.BinaryFileError("a.txt", "binary"), 422, "binary_file"),
        (lib.CorruptDocumentError("a.pdf", "broken"), 422, "corrupt_document"),
        (lib.EmptyDocumentError("a.md", "empty"), 422, "empty_document"),
        (lib.EmbedderMismatchError("other model"), 500, "embedder_mismatch"),
        (lib.IndexCorruptError("v3 unreadable"), 500, "index_error"),
    ],
)
def test_library_errors_map_to_openai_errors(
    error: lib.RetrievalError, status: int, code: str
) -> None:
    mapped = as_gateway_error(error)
    assert (mapped.status_code, mapped.code) == (status, code)
    if status == 404 and code == "collection_not_found":
        assert "'x'" not in mapped.message
    if status >= 500:
        assert error.message not in mapped.message  # server details stay in the log


def test_collections_of_another_embedder_are_named_at_start_with_the_setting_that_serves_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.rag.provider import open_store

    manual = tmp_path / "manual.md"
    manual.write_text("# Manual\n\nHold the reset button for ten seconds.\n")
    CollectionStore(tmp_path / "root", WordHashEmbedder(name="use-multilingual-v3")).ingest(
        "old", [manual]
    )
    CollectionStore(tmp_path / "root", WordHashEmbedder(name="my-e5")).ingest("custom", [manual])
    current = WordHashEmbedder(name="minilm-int8+use-multilingual-v3")
    CollectionStore(tmp_path / "root", current).ingest("fresh", [manual])

    with caplog.at_level("WARNING", logger="gateway.rag.provider"):
        open_store(tmp_path / "root", RetrievalSettings(), current)
    warnings = sorted(r.getMessage() for r in caplog.records)
    assert len(warnings) == 2  # "fresh" matches the configured embedder
    assert warnings[0].startswith("collection 'custom' was built with 'my-e5'")
    assert "retrieval.embedder" not in warnings[0]  # not a bundled one: no setting to name
    assert warnings[1].startswith("collection 'old' was built with 'use-multilingual-v3'")
    assert warnings[1].endswith("retrieval.embedder: use-multilingual serves it as built")
