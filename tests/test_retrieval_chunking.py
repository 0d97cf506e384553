"""Token-sized chunks that respect sections, paragraphs and sentences."""

from __future__ import annotations

import itertools

import pytest

from retrieval.chunking import Chunker
from retrieval.extraction import MARKDOWN, ExtractedDocument, extract
from retrieval.tokens import count_tokens

SENTENCE = "The {n}th valve opens when the pressure in chamber {n} rises above the threshold."


def long_markdown(paragraphs: int = 12, sentences: int = 4) -> str:
    body = "\n\n".join(
        " ".join(SENTENCE.format(n=p * 10 + s) for s in range(sentences)) for p in range(paragraphs)
    )
    return f"# Valve Handbook\n\n## Pressure control\n\n{body}\n\n## Short section\n\nOne line.\n"


def chunk(text: str, chunk_tokens: int = 120, overlap: int = 20) -> tuple[ExtractedDocument, list]:
    document = extract(text.encode(), MARKDOWN, "valves.md", "valves")
    chunks = Chunker(chunk_tokens, overlap).chunk(
        document, document_id="doc", source="valves.md", content_hash="0123456789abcdef"
    )
    return document, chunks


def test_chunks_fit_the_budget_including_the_heading_line() -> None:
    _, chunks = chunk(long_markdown(), chunk_tokens=120)

    assert len(chunks) > 4
    for piece in chunks:
        assert count_tokens(piece.embedding_text()) <= 120 + 2
        assert piece.token_count == count_tokens(piece.text)


def test_chunks_never_cross_sections_and_keep_heading_paths() -> None:
    document, chunks = chunk(long_markdown())

    paths = {c.heading_path for c in chunks}
    assert paths == {("Valve Handbook", "Pressure control"), ("Valve Handbook", "Short section")}
    short = [c for c in chunks if c.heading_path[-1] == "Short section"]
    assert [c.text for c in short] == ["One line."]
    for piece in chunks:
        assert document.text[piece.start : piece.end] == piece.text
        assert "##" not in piece.text
    assert [c.chunk_id for c in chunks[:2]] == ["doc:01234567:00000", "doc:01234567:00001"]


def test_cuts_prefer_paragraph_then_sentence_boundaries() -> None:
    # Paragraphs of 4 sentences (~70 tokens): two fit in a chunk, so cuts fall between them.
    document, chunks = chunk(long_markdown(), chunk_tokens=160)
    body = [c for c in chunks if c.heading_path[-1] == "Pressure control"]
    assert len(body) > 3
    for piece in body[:-1]:
        assert document.text[piece.end : piece.end + 2] == "\n\n"

    # One long paragraph: cuts fall at sentence ends.
    _, chunks = chunk(long_markdown(paragraphs=1, sentences=30), chunk_tokens=160)
    assert len(chunks) > 3
    for piece in chunks[:-2]:
        assert piece.text.endswith("threshold.")


@pytest.mark.parametrize("overlap", [0, 20])
def test_overlap_repeats_the_end_of_the_previous_chunk(overlap: int) -> None:
    text = "# Notes\n\n" + " ".join(SENTENCE.format(n=n) for n in range(60))
    _, chunks = chunk(text, chunk_tokens=100, overlap=overlap)

    assert len(chunks) > 3
    for previous, current in itertools.pairwise(chunks):
        shared = previous.end - current.start
        if overlap:
            assert shared > 0 and count_tokens(previous.text[-shared:]) <= overlap + 1
        else:
            assert shared <= 0
    covered = "".join(c.text for c in chunks)
    assert all(f"chamber {n} " in covered for n in range(60))


def test_text_without_any_boundary_is_still_cut_to_size() -> None:
    text = "# Blob\n\n" + "x" * 5000
    _, chunks = chunk(text, chunk_tokens=64, overlap=8)

    assert len(chunks) > 5
    assert all(count_tokens(c.embedding_text()) <= 66 for c in chunks)
    assert chunks[-1].end == len(text)
