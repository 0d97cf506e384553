"""Chunk selection inside the best page, for a query in another language than the documents.

With the dual embedder (``retrieval.dual_embedding``) a question in French, German or
Spanish over an English manual is ranked by the multilingual part alone: it finds the
right page (page@10 0.95 on the PostgreSQL manual) but often not the chunk of that page
that holds the answer. MiniLM's vector of such a question ranks the whole collection
badly (page@10 0.60), yet inside one page it often puts the answer chunk higher
(identifiers and shared roots: ``serial``, ``standby``, ``INSERT``), so the two parts
are used where each is reliable:

1. hybrid search fuses its rankings as usual;
2. the best fused page (its document) is read back from the index: every chunk of it
   is scored with *both* parts of the dual vector (the stored vectors; the query costs
   one more MiniLM embedding);
3. its ``chunks`` best join the fusion as one more ranking, weighted ``weight``.

It runs only for a query in none of the collection's document languages (English
queries over an English manual already rank with both parts). Measured in
``retrieval/bench/README.md`` (other-language questions): an option, off by default. On
top of the 400-token cross-language passages, 2 chunks at weight 0.5 add one PostgreSQL
question of 60 (answer@5 0.650) and lose one of the 35-page SQLite set's 22.

Pure functions over immutable snapshots: safe to call from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.collection import Snapshot
from retrieval.dual_embedding import DualEmbedder


@dataclass(frozen=True, slots=True)
class PageRerank:
    """Re-score the best page's chunks with both parts of ``embedder``'s query vector."""

    embedder: DualEmbedder
    chunks: int = 2
    """Chunks of the best page that join the fusion (best first)."""
    weight: float = 0.5
    """Their ranking's weight in the fusion (a dense or English BM25 ranking weighs 1)."""

    def page_vector(self, query: str, routed: np.ndarray) -> np.ndarray:
        """``query``'s vector with both parts at ``english_weights``: ``routed`` itself
        when the search ranked with both parts, else its multilingual part and MiniLM's
        embedding of ``query`` (one more query embedding)."""
        english_weight, multilingual_weight = self.embedder.english_weights
        routed_english, routed_multilingual = self.embedder.query_weights(query)
        if routed_english > 0 or routed_multilingual == 0:
            return routed
        split = self.embedder.english.dimension
        multilingual = routed[split:] * (multilingual_weight / routed_multilingual)
        english = self.embedder.english.embed_query(query) * english_weight
        return np.concatenate([english, multilingual]).astype(np.float32)

    def ranking(
        self, snapshots: Sequence[Snapshot], best: tuple[int, int], vector: np.ndarray
    ) -> list[tuple[int, int]]:
        """The ``chunks`` best (snapshot, row) of the page holding row ``best``."""
        number, row = best
        snapshot = snapshots[number]
        rows = snapshot.rows_by_document[snapshot.chunks[row].document_id]
        scores = snapshot.dense.rows(np.asarray(rows, dtype=np.int64)) @ vector
        order = np.argsort(-scores, kind="stable")[: self.chunks]
        return [(number, rows[int(i)]) for i in order]


def page_rerank_for(embedder: object, chunks: int, weight: float) -> PageRerank | None:
    """The page rerank for ``embedder`` (None: ``chunks`` is 0 or the embedder has no
    two parts to combine)."""
    if chunks <= 0 or not isinstance(embedder, DualEmbedder):
        return None
    return PageRerank(embedder, chunks, weight)
