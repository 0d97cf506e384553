"""Extraction of each format, and rejection of bad files with nothing written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from retrieval import (
    BinaryFileError,
    CollectionStore,
    CorruptDocumentError,
    DocumentRejectedError,
    EmptyDocumentError,
    FileTooLargeError,
    IngestStatus,
    RetrievalConfig,
    SourceUnavailableError,
    UnsupportedFileTypeError,
)
from retrieval.extraction import HTML, MARKDOWN, PDF, PLAIN_TEXT, extract
from tests.support.documents import make_pdf
from tests.support.embedders import WordHashEmbedder

HTML_PAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<html><head><title>Backup Guide</title><style>p {color: red}</style></head>
<body>
<nav><a href="/">Home</a> | navigation words</nav>
<div class="toc"><a href="#a">1. Daily backups</a></div>
<h1>Backup Guide</h1>
<p>Backups keep <b>your data</b> safe.</p>
<h2>1. Daily backups</h2>
<p>Run <code>rsync -a /srv /backup</code> every night.</p>
<ul><li>Check the log.</li><li>Rotate old copies.</li></ul>
<h3>1.1 Verifying</h3>
<table><tr><th>Tool</th><th>Purpose</th></tr><tr><td>diff</td><td>compare trees</td></tr></table>
<pre>rsync -a --dry-run /srv /backup
  # indented comment</pre>
<script>var hidden = "script words";</script>
<h2>2. Restores</h2><p>Copy the files back.</p>
</body></html>"""


def section_texts(data: bytes, media_type: str) -> dict[tuple[str, ...], str]:
    document = extract(data, media_type, "test", "fallback")
    return {s.heading_path: document.text[s.start : s.end].strip() for s in document.sections}


def test_markdown_sections_follow_heading_levels_and_ignore_code_fences() -> None:
    markdown = (
        "Intro line.\n\n# Guide\n\nTop text.\n\n## Setup\n\nSetup text.\n\n"
        "```sh\n# not a heading\n```\n\n### Details\n\nDetail text.\n\n"
        "## Usage\n\nUsage text.\n\nSetext Title\n---\n\nLast.\n"
    )
    sections = section_texts(markdown.encode(), MARKDOWN)

    assert sections[()] == "Intro line."
    assert sections[("Guide",)] == "Top text."
    assert sections[("Guide", "Setup")].endswith("# not a heading\n```")
    assert sections[("Guide", "Setup", "Details")] == "Detail text."
    assert sections[("Guide", "Usage")] == "Usage text."
    assert sections[("Guide", "Setext Title")] == "Last."
    assert extract(markdown.encode(), MARKDOWN, "t", "fallback").title == "Guide"


def test_html_keeps_headings_and_drops_navigation_scripts_and_toc() -> None:
    document = extract(HTML_PAGE, HTML, "test", "fallback")
    sections = section_texts(HTML_PAGE, HTML)

    assert document.title == "Backup Guide"
    assert sections[("Backup Guide",)] == "Backups keep your data safe."
    daily = sections[("Backup Guide", "1. Daily backups")]
    assert "Run rsync -a /srv /backup every night." in daily
    assert "Check the log.\n\nRotate old copies." in daily
    verifying = sections[("Backup Guide", "1. Daily backups", "1.1 Verifying")]
    assert "Tool | Purpose\n\ndiff | compare trees" in verifying
    assert "--dry-run /srv /backup\n  # indented comment" in verifying
    assert sections[("Backup Guide", "2. Restores")] == "Copy the files back."
    for hidden in ("navigation words", "script words", "color: red"):
        assert hidden not in document.text
    assert "2. Restores" in document.text  # headings stay in the text, on their own line


def test_pdf_pages_become_sections() -> None:
    data = make_pdf(["Pump maintenance (weekly)\nCheck the gasket.", "Page two: order parts."])
    document = extract(data, PDF, "manual.pdf", "manual")

    assert document.title == "manual"
    sections = section_texts(data, PDF)
    assert sections[("Page 1",)] == "Pump maintenance (weekly)\nCheck the gasket."
    assert sections[("Page 2",)] == "Page two: order parts."


def test_plain_text_is_decoded_from_utf8_or_windows_1252() -> None:
    assert section_texts("naïve café".encode(), PLAIN_TEXT)[()] == "naïve café"
    assert section_texts("naïve café".encode("cp1252"), PLAIN_TEXT)[()] == "naïve café"


@pytest.mark.parametrize(
    ("name", "data", "error", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4\n1 0 obj <<garbage", CorruptDocumentError, "cannot read the PDF"),
        ("fake.pdf", b"just text pretending", CorruptDocumentError, "no %PDF- header"),
        ("blob.txt", b"\x7fELF\x02\x01\x01\x00\x00\x00binary", BinaryFileError, "binary"),
        ("page.html", b"<html>\x00\x01\x02</html>", BinaryFileError, "binary"),
        ("empty.md", b"", EmptyDocumentError, "empty"),
        ("blank.md", b"  \n\n\t\n", EmptyDocumentError, "empty"),
        ("tags.html", b"<html><body><script>x()</script></body></html>", EmptyDocumentError, "no"),
        ("image.png", b"\x89PNG\r\n", UnsupportedFileTypeError, "unsupported file type '.png'"),
        ("README", b"text", UnsupportedFileTypeError, "(no extension)"),
        ("huge.txt", b"word " * 400, FileTooLargeError, "over the 1000 limit"),
    ],
)
def test_bad_files_are_rejected_with_a_typed_error_and_nothing_written(
    tmp_path: Path, name: str, data: bytes, error: type[DocumentRejectedError], reason: str
) -> None:
    store = CollectionStore(
        tmp_path / "store", WordHashEmbedder(), RetrievalConfig(max_file_bytes=1000)
    )
    path = tmp_path / name
    path.write_bytes(data)

    with pytest.raises(error) as raised:
        store.ingest("kb", [path])

    assert raised.value.source == str(path.resolve())
    assert reason in str(raised.value)
    assert store.list_collections() == []
    assert not (store.root / "kb").exists()


def test_a_bad_file_in_a_batch_aborts_the_batch_or_is_skipped(tmp_path: Path) -> None:
    store = CollectionStore(tmp_path / "store", WordHashEmbedder())
    store.ingest("kb", [_write(tmp_path / "first.md", "# First\n\nAlpha text.")])
    good = _write(tmp_path / "good.md", "# Good\n\nBravo text.")
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7 broken")

    with pytest.raises(CorruptDocumentError):
        store.ingest("kb", [good, bad])
    assert [d.title for d in store.list_documents("kb")] == ["First"]
    assert {p.name for p in (store.root / "kb").iterdir()} == {"CURRENT", "v00000001"}

    results = store.ingest("kb", [good, bad, tmp_path / "missing.md"], on_error="skip")
    assert [r.status for r in results] == [
        IngestStatus.ADDED,
        IngestStatus.REJECTED,
        IngestStatus.REJECTED,
    ]
    assert isinstance(results[1].error, CorruptDocumentError)
    assert isinstance(results[2].error, SourceUnavailableError)
    assert sorted(d.title for d in store.list_documents("kb")) == ["First", "Good"]


def test_directories_expand_to_supported_files_and_bytes_can_be_ingested(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    _write(folder / "a.md", "# A\n\nApples.")
    _write(folder / "sub" / "b.txt", "Bananas.")
    _write(folder / "notes.docx", "ignored in a directory walk")
    (folder / "c.pdf").write_bytes(make_pdf(["Cherries."]))
    store = CollectionStore(tmp_path / "store", WordHashEmbedder())

    results = store.ingest("kb", [folder], progress=True)
    uploaded = store.ingest_bytes(
        "kb", b"<h1>Dates</h1><p>Dates.</p>", name="upload.html", source="https://x/d"
    )

    assert [Path(r.source).name for r in results] == ["a.md", "c.pdf", "b.txt"]
    assert uploaded.status is IngestStatus.ADDED
    titles = {d.source.rsplit("/", 1)[-1]: d.title for d in store.list_documents("kb")}
    assert titles == {"a.md": "A", "c.pdf": "c", "b.txt": "b", "d": "Dates"}
    assert store.search("kb", "cherries", k=1)[0].heading_path == ("Page 1",)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


class RecordingEmbedder(WordHashEmbedder):
    """Remembers the texts of every ``embed_documents`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return super().embed_documents(texts)


def test_chunks_are_embedded_by_length_and_each_keeps_its_own_vector(tmp_path: Path) -> None:
    sizes = [3, 40, 1, 25, 8, 60, 2, 15]  # sections of very different lengths, mixed
    fruit = ["apple", "pear", "plum", "cherry", "melon", "grape", "lemon", "mango", "peach"]
    body = "\n\n".join(
        f"## Part {n}\n\n"
        + " ".join(f"{fruit[(n + i) % 9]} {fruit[(n * i) % 9]}" for i in range(size))
        for n, size in enumerate(sizes)
    )
    _write(tmp_path / "mixed.md", f"# Mixed\n\n{body}\n")
    embedder = RecordingEmbedder()
    config = RetrievalConfig(embed_batch_size=3, chunk_tokens=64, chunk_overlap=0)
    store = CollectionStore(tmp_path / "store", embedder, config)

    store.ingest("kb", [tmp_path / "mixed.md"])

    lengths = [len(text) for batch in embedder.batches for text in batch]
    assert len(embedder.batches) >= 3 and all(len(b) <= 3 for b in embedder.batches)
    assert lengths == sorted(lengths, reverse=True)  # longest first, across batches
    snapshot = store.snapshot("kb")
    alone = np.stack(
        [WordHashEmbedder().embed_documents([c.embedding_text()])[0] for c in snapshot.chunks]
    )
    assert np.allclose(snapshot.dense.vectors(), alone, atol=1e-6)
