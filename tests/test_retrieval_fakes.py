"""Test doubles for the retrieval tests (no test functions here).

``WordHashEmbedder`` stands in for a sentence embedder: deterministic, instant, and
like real embedders blind to identifiers such as error codes (it only sees alphabetic
words), which is what hybrid search must make up for.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from retrieval.embedding import normalize_rows

_WORD = re.compile(r"[a-z]{3,}")


class WordHashEmbedder:
    """Bag of alphabetic words (plural 's' stripped) hashed into ``dimension`` signed
    buckets, then L2-normalised; tokens containing digits are ignored."""

    def __init__(self, dimension: int = 256, name: str = "word-hash") -> None:
        self.dimension = dimension
        self.name = name
        self.calls = 0

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dimension, dtype=np.float32)
        for raw in re.findall(r"[A-Za-z0-9]+", text.lower()):
            if not _WORD.fullmatch(raw):
                continue
            word = raw[:-1] if raw.endswith("s") and len(raw) > 3 else raw
            digest = zlib.crc32(word.encode())
            vector[digest % self.dimension] += 1.0 if digest & 1 << 31 else -1.0
        return vector

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalize_rows(np.stack([self._vector(t) for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        return normalize_rows(self._vector(text)[None, :])[0]


class GatedEmbedder(WordHashEmbedder):
    """Blocks ``embed_documents`` until ``release`` is set, after setting ``entered``:
    lets a test act while an ingest is in the middle of embedding."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.entered = threading.Event()
        self.release = threading.Event()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise TimeoutError("test never released the embedder")
        return super().embed_documents(texts)


def make_pdf(pages: Sequence[str]) -> bytes:
    """A minimal valid PDF (Helvetica, one text line per input line) that pypdf reads."""

    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: dict[int, bytes] = {}
    page_ids = [4 + 2 * i for i in range(len(pages))]
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()
    objects[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    for page_id, text in zip(page_ids, pages, strict=True):
        operations = ["BT", "/F1 11 Tf", "14 TL", "72 760 Td"]
        operations += [f"({escape(line)}) Tj T*" for line in text.split("\n")]
        stream = "\n".join([*operations, "ET"]).encode("latin-1")
        objects[page_id] = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (page_id + 1)
        )
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    out = bytearray(b"%PDF-1.4\n")
    offsets: dict[int, int] = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
    xref, size = len(out), max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, size))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)
