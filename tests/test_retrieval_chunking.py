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


DEFINITIONS = b"""<html><head><title>Server Configuration</title></head><body>
<h2>Memory</h2>
<p>Settings that control memory use.</p>
<dl class="variablelist">
  <dt id="guc-a"><code>shared_buffers</code> (<code>integer</code>)</dt>
  <dd><p>Sets the shared memory buffers. The default is typically 128 megabytes.</p></dd>
  <dt><code>-a</code><br><code>--all</code></dt><dt><code>--every</code></dt>
  <dd><p>Processes everything.</p>
    <dl><dt>inner</dt><dd><p>A nested option.</p></dd></dl>
    <p>Back in the outer definition.</p></dd>
</dl>
<p>After the list, still under Memory.</p>
<h2>Disk</h2><p>Disk settings.</p>
</body></html>"""


def test_definition_list_terms_open_sub_sections() -> None:
    document = extract(DEFINITIONS, "text/html", "config.html", "config")
    sections = {document.text[s.start : s.end].strip(): s.heading_path for s in document.sections}

    assert sections["Sets the shared memory buffers. The default is typically 128 megabytes."] == (
        "Memory",
        "shared_buffers (integer)",
    )
    assert sections["Processes everything."] == ("Memory", "-a --all, --every")
    assert sections["A nested option."] == ("Memory", "-a --all, --every", "inner")
    assert sections["Back in the outer definition."] == ("Memory", "-a --all, --every")
    assert sections["After the list, still under Memory."] == ("Memory",)
    assert sections["Disk settings."] == ("Disk",)
    assert "shared_buffers (integer)" in document.text, "terms stay in the text"
    chunks = Chunker(120, 20).chunk(
        document, document_id="d", source="config.html", content_hash="0123456789abcdef"
    )
    default = next(c for c in chunks if "128 megabytes" in c.text)
    assert default.context_line == "Server Configuration > Memory > shared_buffers (integer)"


def test_deeply_nested_definition_lists_extract_in_linear_time() -> None:
    import time

    def seconds(depth: int) -> float:
        data = b"<html><body>" + b"<dl><dt>term</dt><dd>text " * depth + b"</body></html>"
        start = time.perf_counter()
        document = extract(data, "text/html", "deep.html", "deep")
        assert max(len(s.heading_path) for s in document.sections) <= 3
        return time.perf_counter() - start

    seconds(500)
    assert min(seconds(8000) for _ in range(2)) < 32 * min(seconds(1000) for _ in range(2)) + 0.05
