"""The demo's knowledge bases: two fictional products' manuals and FAQs, ingested once.

``kb/<collection>/<language>/*.md`` ships inside the package (Markdown written for
the demo: invented products, model numbers, error codes, reset procedures, warranty
terms, in several languages). ``ensure_demo_collections`` ingests every folder as one
retrieval collection into the cache, next to the demo kit::

    demo-kb-v<N>-<key>/
        kb.json          what was ingested, with which embedder, how long it took
        collections/     the gateway's retrieval.root

``<key>`` hashes the files, the chunking settings and the embedder's name, so a second
start loads nothing and embeds nothing, and editing a file builds a new folder.
Concurrency rule: builds hold the demo kit's cache lock (``.demo-kit.lock``) and write
into a hidden temporary sibling that is renamed when complete, so racing demos build
once and a crash leaves no half-built folder (leftovers go on the next build).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adapters.common.atomic_dir import TMP_SUFFIX, atomic_directory
from adapters.tooling.demo_kit import LOCK_FILE, exclusive_lock
from gateway.rag.provider import BUNDLED_NAMES, build_embedder, library_config
from gateway.settings import RetrievalSettings
from retrieval import CollectionStore, Embedder, SourceDocument
from retrieval.ingest import EXTRACTOR_VERSION

DEMO_KB_VERSION = 1
KB_DIR = Path(__file__).parent / "kb"
KB_MANIFEST = "kb.json"
COLLECTIONS_DIR = "collections"
PREFIX = "demo-kb"

EmbedderFactory = Callable[[], Embedder]


@dataclass(frozen=True)
class DemoKnowledgeBase:
    """Built collections: ``root`` is the gateway's ``retrieval.root``."""

    root: Path
    documents: dict[str, int]
    """Collection name -> number of documents in it."""


def collection_names() -> list[str]:
    """One collection per folder under ``kb/``."""
    return sorted(p.name for p in KB_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))


def kb_files(collection: str) -> list[tuple[str, Path]]:
    """``(source, path)`` of a collection's Markdown files; ``source`` (what citations
    show) is the path under ``kb/``, e.g. ``brewpilot/en/manual.md``."""
    folder = KB_DIR / collection
    return [(p.relative_to(KB_DIR).as_posix(), p) for p in sorted(folder.rglob("*.md"))]


def embedder_label(retrieval: RetrievalSettings) -> str:
    """The name the configured embedder records in collections, without loading it."""
    if retrieval.embedder_name:
        return retrieval.embedder_name
    return (
        retrieval.embedder_dir.name if retrieval.embedder_dir else BUNDLED_NAMES[retrieval.embedder]
    )


def demo_kb_key(retrieval: RetrievalSettings, embedder_name: str) -> str:
    """Short hash of everything that decides the collections' content."""
    inputs = {
        "version": DEMO_KB_VERSION,
        "extractor": EXTRACTOR_VERSION,
        "embedder": embedder_name,
        "prefixes": [retrieval.query_prefix, retrieval.document_prefix],
        "chunking": [retrieval.chunk_tokens, retrieval.chunk_overlap],
        "files": {
            source: hashlib.sha256(path.read_bytes()).hexdigest()
            for name in collection_names()
            for source, path in kb_files(name)
        },
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def ensure_demo_collections(
    cache_dir: Path,
    retrieval: RetrievalSettings,
    *,
    embedder_factory: EmbedderFactory | None = None,
    embedder_name: str | None = None,
    progress: bool = True,
) -> DemoKnowledgeBase:
    """The demo's collections in ``cache_dir``, ingested first if they are not there.

    ``embedder_factory`` (tests: a fake) replaces the configured embedder; then give
    its ``embedder_name`` too, so the cache key names what built the vectors.
    """
    name = embedder_name or embedder_label(retrieval)
    folder = Path(cache_dir) / f"{PREFIX}-v{DEMO_KB_VERSION}-{demo_kb_key(retrieval, name)}"
    built = _load(folder)
    if built is not None:
        return built
    folder.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder.parent / LOCK_FILE):
        built = _load(folder)  # another demo may have built it meanwhile
        if built is not None:
            return built
        for leftover in folder.parent.glob(f".{PREFIX}-*{TMP_SUFFIX}"):
            shutil.rmtree(leftover, ignore_errors=True)
        factory = embedder_factory or (lambda: build_embedder(retrieval))
        _build(folder, retrieval, factory(), progress=progress)
    built = _load(folder)
    if built is None:
        raise RuntimeError(f"the demo knowledge base in {folder} is incomplete after building it")
    return built


def _load(folder: Path) -> DemoKnowledgeBase | None:
    try:
        manifest = json.loads((folder / KB_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    root = folder / COLLECTIONS_DIR
    documents = {str(k): int(v) for k, v in manifest.get("documents", {}).items()}
    if not all((root / c / "CURRENT").is_file() for c in documents):
        return None
    return DemoKnowledgeBase(root=root, documents=documents)


def _build(
    folder: Path, retrieval: RetrievalSettings, embedder: Embedder, *, progress: bool
) -> None:
    started = time.monotonic()
    with atomic_directory(folder) as tmp:
        store = CollectionStore(tmp / COLLECTIONS_DIR, embedder, library_config(retrieval))
        documents: dict[str, int] = {}
        for collection in collection_names():
            inputs = [
                SourceDocument(data=path.read_bytes(), source=source, name=path.name)
                for source, path in kb_files(collection)
            ]
            if progress:
                print(f"loragate demo: ingesting {len(inputs)} documents into '{collection}'")
            store.ingest(collection, inputs, progress=progress)
            documents[collection] = len(inputs)
        manifest = {
            "version": DEMO_KB_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "embedder": embedder.name,
            "documents": documents,
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (tmp / KB_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
