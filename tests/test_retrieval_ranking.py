"""Ranking within documents: hits grown into section passages (``retrieval.expand``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from retrieval import CollectionStore, RetrievalConfig, SourceDocument
from retrieval.collection import Snapshot
from retrieval.expand import added_tokens, build_passages, joined_text, same_section
from retrieval.extraction import extract
from tests.support.embedders import WordHashEmbedder

FILLER = (
    "The buffer pool keeps recently used table pages in memory so that repeated reads "
    "avoid the disk. Each backend process looks up pages in the pool before reading. "
)
MANUAL = f"""# Server Manual

## Memory

The shared buffer pool is the main cache of the server. {FILLER * 2}

{FILLER * 2}

Its default size is typically 128 megabytes, set at server start.

## Connections

The server accepts at most one hundred concurrent connections by default. {FILLER}
"""


def make_store(tmp_path: Path, passage_tokens: int = 0) -> CollectionStore:
    config = RetrievalConfig(chunk_tokens=48, chunk_overlap=8, passage_tokens=passage_tokens)
    store = CollectionStore(tmp_path / "store", WordHashEmbedder(), config)
    store.ingest("kb", [SourceDocument(MANUAL.encode(), "/kb/server.md", "server.md")])
    return store


def with_passages(store: CollectionStore, passage_tokens: int) -> CollectionStore:
    config = dataclasses.replace(store.config, passage_tokens=passage_tokens)
    return CollectionStore(store.root, store.embedder, config)


def rows(snapshot: Snapshot, heading: str) -> list[int]:
    return [i for i, c in enumerate(snapshot.chunks) if c.heading_path[-1:] == (heading,)]


def squeeze(text: str) -> str:
    return " ".join(text.split())


def test_a_hit_grows_into_the_following_chunks_of_its_section(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    snapshot = store.snapshot("kb")
    memory = rows(snapshot, "Memory")
    assert len(memory) >= 3, "the fixture must cut the Memory section into several chunks"
    seed = snapshot.chunks[memory[0]]
    assert "128 megabytes" not in seed.text

    [passage] = build_passages([snapshot], [(0.9, 0, memory[0])], k=1, passage_tokens=10_000)

    assert "128 megabytes" in passage.text
    assert passage.text.startswith(seed.text)
    assert "one hundred concurrent" not in passage.text, "crossed into the next section"
    assert (passage.chunk_id, passage.score, passage.start) == (seed.chunk_id, 0.9, seed.start)
    assert passage.end == snapshot.chunks[memory[-1]].end
    document = extract(MANUAL.encode(), "text/markdown", "/kb/server.md", "server")
    # The passage is the document's own text over its span, each overlap counted once.
    assert squeeze(passage.text) == squeeze(document.text[passage.start : passage.end])


def test_a_passage_stays_within_its_token_budget(tmp_path: Path) -> None:
    snapshot = make_store(tmp_path).snapshot("kb")
    memory = rows(snapshot, "Memory")
    seed = snapshot.chunks[memory[1]]

    [single] = build_passages([snapshot], [(1.0, 0, memory[1])], k=1, passage_tokens=1)
    [grown] = build_passages(
        [snapshot], [(1.0, 0, memory[1])], k=1, passage_tokens=seed.token_count + 60
    )

    assert single.text == seed.text
    assert (grown.start, grown.end) != (seed.start, seed.end)
    assert (
        grown.end - grown.start < snapshot.chunks[memory[-1]].end - snapshot.chunks[memory[0]].start
    )


def test_hits_inside_a_passage_free_their_slot(tmp_path: Path) -> None:
    snapshot = make_store(tmp_path).snapshot("kb")
    memory, connections = rows(snapshot, "Memory"), rows(snapshot, "Connections")
    ranked = [(0.9, 0, memory[0]), (0.8, 0, memory[1]), (0.7, 0, connections[0])]

    passages = build_passages([snapshot], ranked, k=2, passage_tokens=10_000)

    assert [p.chunk_id for p in passages] == [
        snapshot.chunks[memory[0]].chunk_id,
        snapshot.chunks[connections[0]].chunk_id,
    ]
    spans = sorted((p.start, p.end) for p in passages)
    assert spans[0][1] <= spans[1][0], "passages overlap"


def test_a_passage_grows_towards_the_better_ranked_neighbour(tmp_path: Path) -> None:
    snapshot = make_store(tmp_path).snapshot("kb")
    memory = rows(snapshot, "Memory")
    middle = memory[1]
    before, after = snapshot.chunks[middle - 1], snapshot.chunks[middle + 1]
    costs = [
        added_tokens(before, snapshot.chunks[middle]),
        added_tokens(snapshot.chunks[middle], after),
    ]
    budget = snapshot.chunks[middle].token_count + max(costs)  # room for one neighbour only
    assert min(costs) > 0

    [default] = build_passages([snapshot], [(1.0, 0, middle)], k=1, passage_tokens=budget)
    [pulled] = build_passages(
        [snapshot], [(1.0, 0, middle), (0.5, 0, middle - 1)], k=1, passage_tokens=budget
    )

    assert default.end == after.end and default.start == snapshot.chunks[middle].start
    assert pulled.start == before.start and pulled.end == snapshot.chunks[middle].end


def test_chunks_of_different_sections_are_never_joined(tmp_path: Path) -> None:
    snapshot = make_store(tmp_path).snapshot("kb")
    last_memory, first_connection = rows(snapshot, "Memory")[-1], rows(snapshot, "Connections")[0]
    chunks = snapshot.chunks

    assert same_section(chunks[last_memory - 1], chunks[last_memory])
    assert not same_section(chunks[last_memory], chunks[first_connection])
    relabelled = dataclasses.replace(chunks[last_memory], heading_path=("Server Manual", "Other"))
    assert not same_section(chunks[last_memory - 1], relabelled)
    elsewhere = dataclasses.replace(chunks[last_memory], document_id="another")
    assert not same_section(chunks[last_memory - 1], elsewhere)
    assert joined_text([chunks[0]]) == chunks[0].text


def test_store_search_returns_passages_only_when_configured(tmp_path: Path) -> None:
    chunks_store = make_store(tmp_path)
    passage_store = with_passages(chunks_store, 400)
    query = "shared buffer pool main cache default size"

    plain = chunks_store.search("kb", query, k=2, mode="bm25")
    grown = passage_store.search("kb", query, k=2, mode="bm25")

    assert all(len(h.text) <= 400 for h in plain)
    assert any("128 megabytes" in h.text for h in grown)
    assert grown[0].chunk_id == plain[0].chunk_id
    assert len({(h.document_id, h.start) for h in grown}) == len(grown)


def test_passage_tokens_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="passage_tokens"):
        RetrievalConfig(passage_tokens=-1)
