"""Token-sized chunks that respect headings, paragraphs and sentences.

A chunk never crosses a section (heading) boundary. Inside a section the chunker fills
up to ``chunk_tokens`` tokens of its :class:`~retrieval.tokens.ChunkTokenizer` (the
embedder's own word-pieces when it has a tokenizer, else cl100k) -- counting the
heading line the embedder will also read -- and cuts at the best boundary in the
second half of the window: a paragraph break, else a sentence end, else a line break,
else a word break, else anywhere. The next chunk starts ``overlap`` tokens earlier,
snapped to a sentence or word start, so a fact cut by a boundary appears whole in one
of the two chunks.
"""

from __future__ import annotations

import bisect
import re

from retrieval.extraction import ExtractedDocument
from retrieval.records import Chunk, context_line
from retrieval.tokens import ChunkTokenizer, Cl100kTokenizer, cl100k

_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"[.!?:;][\"')\]]*(?=\s)")
_LINE = re.compile(r"\n\s*")
_WORD = re.compile(r"(?<=\S)(?=\s)")


class Chunker:
    """Splits an :class:`ExtractedDocument` into :class:`Chunk` records (stateless after
    construction, so one instance may be shared by threads)."""

    def __init__(
        self, chunk_tokens: int = 180, overlap: int = 30, tokenizer: ChunkTokenizer | None = None
    ) -> None:
        self.tokenizer: ChunkTokenizer = tokenizer or Cl100kTokenizer()
        if self.tokenizer.max_tokens is not None:
            chunk_tokens = min(chunk_tokens, self.tokenizer.max_tokens)
            overlap = min(overlap, chunk_tokens // 2 - 1)
        if overlap >= chunk_tokens // 2:
            raise ValueError("overlap must be under half of chunk_tokens")
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self._encoding = cl100k()

    def chunk(
        self,
        document: ExtractedDocument,
        *,
        document_id: str,
        source: str,
        content_hash: str,
        language: str = "",
    ) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in document.sections:
            header = context_line(document.title, section.heading_path)
            header_tokens = len(self.tokenizer.token_starts(header)) + 1
            budget = max(self.chunk_tokens - header_tokens, self.chunk_tokens // 2)
            text = document.text[section.start : section.end]
            for start, end in self._spans(text, budget):
                body = text[start:end]
                stripped = body.strip()
                if not stripped:
                    continue
                lead = len(body) - len(body.lstrip())
                begin = section.start + start + lead
                chunks.append(
                    Chunk(
                        chunk_id=f"{document_id}:{content_hash[:8]}:{len(chunks):05d}",
                        document_id=document_id,
                        title=document.title,
                        source=source,
                        heading_path=section.heading_path,
                        text=stripped,
                        start=begin,
                        end=begin + len(stripped),
                        token_count=len(self._encoding.encode_ordinary(stripped)),
                        language=language,
                    )
                )
        return chunks

    def _spans(self, text: str, budget: int) -> list[tuple[int, int]]:
        """Character spans of the chunks of one section's text."""
        offsets = self.tokenizer.token_starts(text)
        if len(offsets) <= budget:
            return [(0, len(text))]
        breaks = _BreakPoints(text, offsets)
        overlap = self.overlap
        spans: list[tuple[int, int]] = []
        start, total = 0, len(offsets)
        while start < total:
            limit = start + budget
            end = total if limit >= total else breaks.best(start + budget // 2, limit)
            spans.append((offsets[start], offsets[end] if end < total else len(text)))
            if end >= total:
                break
            start = max(breaks.restart(end - overlap, end), start + 1) if overlap else end
        return spans


class _BreakPoints:
    """Token indices where a chunk may end, grouped by how good a cut they make."""

    def __init__(self, text: str, offsets: list[int]) -> None:
        def token_starts(positions: list[int]) -> list[int]:
            found = {bisect.bisect_left(offsets, pos) for pos in positions}
            return sorted(i for i in found if 0 < i < len(offsets))

        self.levels = [
            token_starts([m.end() for m in _PARAGRAPH.finditer(text)]),
            token_starts([m.end() for m in _SENTENCE.finditer(text)]),
            token_starts([m.end() for m in _LINE.finditer(text)]),
            token_starts([m.end() for m in _WORD.finditer(text)]),
        ]

    def best(self, low: int, high: int) -> int:
        """The best cut in ``(low, high]``; ``high`` itself when there is none."""
        for level in self.levels:
            index = bisect.bisect_right(level, high) - 1
            if index >= 0 and level[index] > low:
                return level[index]
        return high

    def restart(self, low: int, high: int) -> int:
        """Where the next chunk starts: the earliest paragraph (else sentence, line,
        word) start in ``[low, high)``, so the overlap is at most ``high - low`` tokens."""
        for level in self.levels:
            index = bisect.bisect_left(level, max(low, 0))
            if index < len(level) and level[index] < high:
                return level[index]
        return high if low >= high else max(low, 0)
