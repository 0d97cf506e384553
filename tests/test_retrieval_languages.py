"""Language-aware BM25 (detection, stop words, Snowball stems, cross-language queries),
chunks sized in the embedder's word-pieces, and 10,000-deep HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from retrieval.analysis import Analyzer, detect_language
from retrieval.bm25 import META_FILE, Bm25Index
from retrieval.chunking import Chunker
from retrieval.config import RetrievalConfig
from retrieval.embedding import bundled_model_dir
from retrieval.extraction import HTML, MARKDOWN, extract
from retrieval.store import CollectionStore
from retrieval.tokens import HuggingFaceTokenizer
from tests.support.embedders import WordHashEmbedder as HashingEmbedder

SENTENCES = {
    "en": "Which command restores the database from the backup file when the server is down?",
    "fr": "Quelle commande restaure la base de données à partir du fichier de sauvegarde ?",
    "de": "Welcher Befehl stellt die Datenbank aus der Sicherungsdatei wieder her?",
    "es": "¿Qué comando restaura la base de datos desde el archivo de copia de seguridad?",
    "it": "Quale comando ripristina il database dal file di backup quando il server è fermo?",
    "pt": "Qual comando restaura o banco de dados a partir do arquivo de backup?",
    "nl": "Welk commando zet de database terug uit het back-upbestand als de server niet draait?",
}


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_detects_the_language_of_a_sentence(language: str) -> None:
    assert detect_language(SENTENCES[language]) == language


def test_text_without_stop_words_gets_the_default() -> None:
    assert detect_language("pg_restore --clean") == "en"
    assert detect_language("pg_restore --clean", default="fr") == "fr"


def test_stop_words_and_stems_follow_the_language() -> None:
    analyzer = Analyzer()
    assert analyzer.terms("Les sauvegardes restaurées", "fr") == ["sauvegard", "restaur"]
    assert analyzer.terms("Die Sicherungen", "de") == ["sicher"]
    # "die" is an English word: only German drops it
    assert analyzer.terms("die", "en") == ["die"]
    # accents are folded after stemming, so unaccented queries meet accented text
    assert analyzer.terms("paramètres", "fr") == analyzer.terms("parametres", "fr")


def test_a_query_is_stemmed_in_its_language_and_in_the_index_languages() -> None:
    analyzer = Analyzer()
    terms = analyzer.query_terms("Comment configurer les connexions ?", "fr", ["en"])
    assert "connexion" in terms  # French stem
    assert "configur" in terms  # shared by both stemmers
    assert "comment" not in terms  # a French stop word, even for the English stems


def test_bm25_ranks_documents_in_their_own_language() -> None:
    texts = [
        "Les sauvegardes de la base sont restaurées avec pg_restore.",
        "Die Sicherungen der Datenbank werden mit pg_restore zurückgespielt.",
        "Connection pooling keeps server connections open between requests.",
    ]
    index = Bm25Index.build(texts, ["fr", "de", "en"])
    assert index.languages == ("de", "en", "fr")

    # inflected forms meet only through the stemmer of the document's language
    _, rows = index.search("sauvegarde restaurée", 3, "fr")
    assert rows.tolist() == [0]
    _, rows = index.search("Sicherung", 3, "de")
    assert rows.tolist() == [1]
    # a French question finds the English text through stems shared across languages
    _, rows = index.search("Comment activer le pooling ?", 3, None)
    assert rows.tolist() == [2]


def test_an_index_saved_by_an_older_analyzer_is_rebuilt_on_load(tmp_path: Path) -> None:
    store = CollectionStore(tmp_path, HashingEmbedder(), RetrievalConfig())
    store.ingest_bytes(
        "docs",
        "# Sauvegardes\n\nLes sauvegardes sont restaurées chaque nuit par le serveur.\n".encode(),
        name="fr.md",
    )
    (chunk,) = store.snapshot("docs").chunks
    assert chunk.language == "fr"
    assert store.list_documents("docs")[0].language == "fr"
    version = next(p for p in (tmp_path / "docs").iterdir() if p.name.startswith("v"))
    # what a collection written before this analyzer looks like: no meta, English terms
    (version / META_FILE).unlink()
    Bm25Index.build(["unrelated english words"]).save(version)
    (version / META_FILE).unlink()
    fresh = CollectionStore(tmp_path, HashingEmbedder(), RetrievalConfig())

    hits = fresh.search("docs", "sauvegarde restaurée", k=3, mode="bm25")

    assert [h.chunk_id for h in hits] == [chunk.chunk_id]


def test_a_language_whose_documents_are_all_deleted_is_dropped(tmp_path: Path) -> None:
    store = CollectionStore(tmp_path, HashingEmbedder(), RetrievalConfig())
    store.ingest_bytes("docs", SENTENCES["fr"].encode(), name="fr.txt")
    store.ingest_bytes("docs", SENTENCES["en"].encode(), name="en.txt")
    assert store.snapshot("docs").bm25.languages == ("en", "fr")
    (french,) = [d for d in store.list_documents("docs") if d.language == "fr"]

    store.delete_document("docs", french.document_id)

    assert store.snapshot("docs").bm25.languages == ("en",)
    reopened = CollectionStore(tmp_path, HashingEmbedder(), RetrievalConfig())
    assert reopened.snapshot("docs").bm25.languages == ("en",)  # saved per row
    reopened.ingest_bytes("docs", SENTENCES["de"].encode(), name="de.txt")
    assert reopened.snapshot("docs").bm25.languages == ("de", "en")


def test_configured_languages_override_detection(tmp_path: Path) -> None:
    config = RetrievalConfig(language="de", query_language="de")
    store = CollectionStore(tmp_path, HashingEmbedder(), config)
    store.ingest_bytes("docs", b"Die Sicherungen laufen nachts.", name="a.txt")
    assert store.snapshot("docs").chunks[0].language == "de"
    assert store.search("docs", "Sicherung", k=1, mode="bm25")
    with pytest.raises(ValueError, match="language"):
        RetrievalConfig(language="xx")


# --- chunks sized in the embedder's tokens ------------------------------------------


@pytest.fixture(scope="module")
def word_pieces() -> Tokenizer:
    return Tokenizer.from_file(str(bundled_model_dir() / "tokenizer.json"))


def test_chunks_fit_the_embedders_word_pieces(word_pieces: Tokenizer) -> None:
    tokenizer = HuggingFaceTokenizer(word_pieces, "wp:test", max_tokens=62)
    # identifiers and numbers cost many more word-pieces than cl100k tokens
    sentence = "Set shared_buffers=128MB and wal_keep_size=4096 in postgresql.conf (see §19.4). "
    text = "# Tuning\n\n## Memory\n\n" + sentence * 40
    document = extract(text.encode(), MARKDOWN, "t.md", "t")
    chunker = Chunker(chunk_tokens=200, overlap=10, tokenizer=tokenizer)
    assert chunker.chunk_tokens == 62  # capped at what the model reads

    chunks = chunker.chunk(document, document_id="d", source="t.md", content_hash="0" * 16)

    assert len(chunks) > 5
    counter = Tokenizer.from_str(word_pieces.to_str())
    counter.no_truncation()
    for chunk in chunks:
        pieces = len(counter.encode(chunk.embedding_text(), add_special_tokens=False).ids)
        assert pieces <= 62
        assert document.text[chunk.start : chunk.end] == chunk.text
    covered = " ".join(c.text for c in chunks)
    assert covered.count("postgresql.conf") >= 40


def test_cl100k_chunking_is_still_available(tmp_path: Path) -> None:
    config = RetrievalConfig(chunk_in_embedder_tokens=False)
    store = CollectionStore(tmp_path, HashingEmbedder(), config)
    assert store.preparer.chunking.startswith("cl100k/180/30/")


# --- deeply nested HTML ---------------------------------------------------------------


def test_html_nested_ten_thousand_deep_extracts_with_its_sections() -> None:
    depth = 10_000
    markup = (
        "<html><body><h1>Deep manual</h1>"
        + "<div><section>" * (depth // 2)
        + "<h2>Options</h2><dl><dt>--fast</dt><dd>skips the checks</dd></dl>"
        + "<table><tr><th>name</th><td>value</td></tr></table>"
        + "</section></div>" * (depth // 2)
        + "<p>after</p></body></html>"
    )
    document = extract(markup.encode(), HTML, "deep.html", "deep")

    assert "skips the checks" in document.text and "name | value" in document.text
    paths = [s.heading_path for s in document.sections]
    assert ("Deep manual", "Options") in paths
    assert document.text.rstrip().endswith("after")


def test_chunk_records_round_trip_the_language() -> None:
    from retrieval.records import Chunk

    chunk = Chunk("c", "d", "t", "s", ("h",), "text", 0, 4, 1, "fr")
    assert Chunk.from_dict(json.loads(json.dumps(chunk.to_dict()))) == chunk
    legacy = chunk.to_dict()
    del legacy["language"]
    assert Chunk.from_dict(legacy).language == ""
