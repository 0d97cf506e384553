"""CollectionStore behaviour with a fake embedder: ingest, search, re-ingest, delete."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from retrieval import (
    CollectionNotFoundError,
    CollectionStore,
    DocumentNotFoundError,
    EmbedderMismatchError,
    IngestStatus,
    InvalidCollectionNameError,
    RetrievalConfig,
    SearchMode,
    SourceDocument,
)
from tests.support.documents import BILLING_FAQ, ROUTER_MANUAL
from tests.support.embedders import GatedEmbedder, WordHashEmbedder


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "router.md").write_text(ROUTER_MANUAL)
    (folder / "billing.md").write_text(BILLING_FAQ)
    return folder


@pytest.fixture
def store(tmp_path: Path) -> CollectionStore:
    return CollectionStore(tmp_path / "store", WordHashEmbedder())


def version_dirs(store: CollectionStore, name: str) -> list[str]:
    return sorted(p.name for p in (store.root / name).iterdir() if p.name.startswith("v"))


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_finds_the_passage_that_answers(
    store: CollectionStore, docs: Path, mode: SearchMode
) -> None:
    results = store.ingest("support", [docs])
    assert {r.status for r in results} == {IngestStatus.ADDED}

    hits = store.search("support", "How do I reset the admin password I forgot?", k=3, mode=mode)

    top = hits[0]
    assert "hold the recessed reset button" in top.text
    assert top.title == "Acme Router Manual"
    assert top.heading_path == ("Acme Router Manual", "Resetting the admin password")
    assert top.source == str((docs / "router.md").resolve())
    assert top.collection == "support"
    text = (docs / "router.md").read_text()
    assert text[top.start : top.end] == top.text
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hybrid_finds_exact_error_code_that_dense_misses(store: CollectionStore) -> None:
    faq = [
        "What does the blinking light mean? What does it mean when it does that?",
        "What does the orange status mean? What does the manual say it does?",
        "What does the fan noise mean? What does support advise when it does?",
        "What does a slow connection mean? What does the log show when it does?",
    ]
    documents = [
        SourceDocument(text.encode(), f"faq-{i}.txt", f"faq-{i}.txt") for i, text in enumerate(faq)
    ]
    documents.append(
        SourceDocument(
            b"Code E4013 is raised when the license certificate expired; renew it in the portal.",
            "codes.txt",
            "codes.txt",
        )
    )
    store.ingest("kb", documents)
    query = "what does E4013 do"

    dense = store.search("kb", query, k=3, mode="dense")
    bm25 = store.search("kb", query, k=3, mode="bm25")
    hybrid = store.search("kb", query, k=3, mode="hybrid")

    assert all("E4013" not in hit.text for hit in dense)
    assert "E4013" in bm25[0].text
    assert "E4013" in hybrid[0].text


def test_reingesting_an_unchanged_file_does_nothing(
    store: CollectionStore, docs: Path, tmp_path: Path
) -> None:
    store.ingest("support", [docs])
    before = version_dirs(store, "support")
    embedder = store.embedder
    assert isinstance(embedder, WordHashEmbedder)
    calls = embedder.calls

    results = store.ingest("support", [docs])

    assert {r.status for r in results} == {IngestStatus.UNCHANGED}
    assert [r.chunk_count > 0 for r in results] == [True, True]
    assert version_dirs(store, "support") == before
    assert embedder.calls == calls
    assert store.list_collections()[0].version == 1


def test_changed_file_replaces_its_old_chunks(store: CollectionStore, docs: Path) -> None:
    store.ingest("support", [docs])
    router = docs / "router.md"
    original = {d.document_id: d for d in store.list_documents("support")}
    router.write_text(ROUTER_MANUAL.replace("ten\nseconds", "thirty\nseconds"))

    (result,) = store.ingest("support", [router])

    assert result.status is IngestStatus.REPLACED
    documents = {d.document_id: d for d in store.list_documents("support")}
    assert documents.keys() == original.keys()
    assert documents[result.document_id].content_hash != original[result.document_id].content_hash
    snapshot = store.snapshot("support")
    texts = [c.text for c in snapshot.chunks if c.document_id == result.document_id]
    assert len(texts) == documents[result.document_id].chunk_count
    assert any("thirty" in t for t in texts)
    assert not any("for ten" in t for t in texts)
    assert len(snapshot.chunks) == sum(d.chunk_count for d in documents.values())
    hit = store.search("support", "reset button seconds", k=1, mode="bm25")[0]
    assert "thirty" in hit.text


def test_delete_document_removes_its_chunks(store: CollectionStore, docs: Path) -> None:
    results = store.ingest("support", [docs])
    router_id = next(r.document_id for r in results if r.source.endswith("router.md"))

    store.delete_document("support", router_id)

    assert [d.title for d in store.list_documents("support")] == ["Billing FAQ"]
    hits = store.search("support", "reset the admin password", k=5)
    assert hits and all(h.document_id != router_id for h in hits)
    with pytest.raises(DocumentNotFoundError):
        store.delete_document("support", router_id)


def test_list_collections_and_documents_with_counts(store: CollectionStore, docs: Path) -> None:
    store.ingest("support", [docs])
    store.create_collection("empty")

    collections = {c.name: c for c in store.list_collections()}

    assert collections.keys() == {"empty", "support"}
    assert collections["empty"].chunk_count == collections["empty"].document_count == 0
    documents = store.list_documents("support")
    assert sorted(d.title for d in documents) == ["Acme Router Manual", "Billing FAQ"]
    assert collections["support"].chunk_count == sum(d.chunk_count for d in documents) > 2
    assert store.search("empty", "anything") == []


def test_delete_collection_and_unknown_names(store: CollectionStore, docs: Path) -> None:
    store.ingest("support", [docs])
    store.delete_collection("support")

    assert store.list_collections() == []
    with pytest.raises(CollectionNotFoundError):
        store.search("support", "password")
    with pytest.raises(InvalidCollectionNameError):
        store.ingest("../escape", [docs])


def test_collection_survives_a_new_store_and_refuses_another_embedder(
    store: CollectionStore, docs: Path
) -> None:
    store.ingest("support", [docs])

    reopened = CollectionStore(store.root, WordHashEmbedder())
    assert reopened.search("support", "refund payment card", k=1)[0].title == "Billing FAQ"

    other = CollectionStore(store.root, WordHashEmbedder(dimension=64, name="other"))
    with pytest.raises(EmbedderMismatchError):
        other.search("support", "refund", mode="dense")
    with pytest.raises(EmbedderMismatchError):
        other.ingest("support", [docs / "router.md"])
    assert other.search("support", "refund", mode="bm25")[0].title == "Billing FAQ"


def test_searches_do_not_wait_for_a_running_ingest(tmp_path: Path, docs: Path) -> None:
    embedder = GatedEmbedder()
    embedder.release.set()
    store = CollectionStore(tmp_path / "store", embedder)
    store.ingest("support", [docs / "billing.md"])
    embedder.release.clear()
    embedder.entered.clear()
    worker = threading.Thread(target=store.ingest, args=("support", [docs / "router.md"]))
    worker.start()
    try:
        assert embedder.entered.wait(timeout=10)
        during = store.search("support", "admin password reset button", k=5, mode="bm25")
        assert all(h.title == "Billing FAQ" for h in during)
    finally:
        embedder.release.set()
        worker.join(timeout=30)
    after = store.search("support", "admin password reset button", k=1, mode="bm25")
    assert after[0].title == "Acme Router Manual"


def test_search_across_collections_and_hnsw(tmp_path: Path, docs: Path) -> None:
    config = RetrievalConfig(hnsw_threshold=3)
    store = CollectionStore(tmp_path / "store", WordHashEmbedder(), config)
    store.ingest("router", [docs / "router.md"])
    store.ingest("billing", [docs / "billing.md"])

    hits = store.search(["router", "billing"], "refund to the payment card", k=2)

    assert hits[0].collection == "billing"
    assert store.snapshot("router").dense.kind == "hnsw"
    assert store.snapshot("billing").dense.kind == "flat"
    vectors = store.snapshot("router").dense.vectors()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
