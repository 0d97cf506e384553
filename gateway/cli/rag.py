"""``loragate rag ...``: the collections on this machine, used directly (no gateway).

The store is the one a gateway would use: ``--config`` (its ``retrieval`` section and
data folder), or ``--data-dir`` (collections in ``DATA_DIR/collections``, the default
``registry.data_dir`` being ``.loragate``). A running gateway may share it: writers
lock each collection, and the gateway sees a new version on its next search.

Exit status: 0 ok, 1 a document was rejected or the store refused, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import yaml
from pydantic import ValidationError

from gateway.extras import RAG, MissingExtraError, require
from gateway.rag.protocol import CollectionCard, DocumentCard, SearchResult
from gateway.rag.provider import build_embedder, open_store
from gateway.settings import RegistrySettings, RetrievalSettings, Settings, config_error_lines
from retrieval import IngestStatus, RetrievalError, SearchMode

if TYPE_CHECKING:  # the store and its embedders come with the rag extra
    import numpy as np

    from retrieval import CollectionStore, Embedder
    from retrieval.ingest import OnError

SNIPPET_CHARS = 160


class NoVectors:
    """Stands in for the embedder where no vector is computed (listings, keyword
    search), so those commands do not load the model; using it is a bug."""

    name = "(not loaded)"
    dimension = 0

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("this command does not load the embedding model")

    def embed_query(self, text: str) -> np.ndarray:
        raise RuntimeError("this command does not load the embedding model")


def add_rag_parser(sub: Any) -> None:
    """Add ``rag`` and its subcommands to the top-level ``loragate`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        type=Path,
        help="gateway config file, for its collections and retrieval settings (default: "
        "none; see --data-dir)",
    )
    where.add_argument(
        "--data-dir",
        type=Path,
        help="gateway data folder, collections in DATA_DIR/collections (default: .loragate)",
    )
    common.add_argument("--json", action="store_true", help="print JSON")

    rag = sub.add_parser("rag", help="retrieval collections on this machine")
    cmds = rag.add_subparsers(dest="rag_command", required=True)
    ingest = cmds.add_parser(
        "ingest", parents=[common], help="add or replace files (folders: their supported files)"
    )
    ingest.add_argument("--collection", required=True, help="collection name (made if new)")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to ingest")
    ingest.add_argument(
        "--skip-errors", action="store_true", help="ingest the rest when a file is rejected"
    )
    ingest.add_argument("--no-progress", action="store_true", help="no progress bars")
    ingest.add_argument(
        "--follow-outside-links",
        action="store_true",
        help="ingest a folder's files that are links to places outside it (refused by "
        "default: a cloned folder can carry a link to a secret)",
    )

    listing = cmds.add_parser("list", parents=[common], help="collections, or one's documents")
    listing.add_argument(
        "--collection", help="list this collection's documents (default: list the collections)"
    )

    search = cmds.add_parser("search", parents=[common], help="the best chunks for a query")
    search.add_argument("--collection", required=True, action="append", help="repeatable")
    search.add_argument("query", help="the question to find sources for")
    search.add_argument(
        "--top-k", type=int, default=None, help="chunks to return (default: retrieval.top_k)"
    )
    search.add_argument(
        "--mode",
        choices=get_args(SearchMode),
        default=None,
        help="dense, bm25 or hybrid (default: retrieval.mode)",
    )

    delete = cmds.add_parser("delete", parents=[common], help="remove a document")
    delete.add_argument("--collection", required=True, help="collection name")
    delete.add_argument("document_id", help="id of the document (rag list --collection)")
    rag.set_defaults(func=cmd_rag)


def store_location(args: argparse.Namespace) -> tuple[Path, RetrievalSettings]:
    if args.config is not None:
        settings = Settings.load(args.config)
        return settings.collections_root, settings.retrieval
    data_dir = args.data_dir if args.data_dir is not None else RegistrySettings().data_dir
    return data_dir / "collections", RetrievalSettings()


def cmd_rag(args: argparse.Namespace) -> int:
    try:
        root, settings = store_location(args)
    except (ValidationError, ValueError, OSError, yaml.YAMLError) as exc:
        for line in config_error_lines(args.config, exc):
            print(line, file=sys.stderr)
        return 2
    try:
        require(RAG)
    except MissingExtraError as exc:
        print(f"loragate rag: {exc}", file=sys.stderr)
        return 2
    needs_vectors = args.rag_command in ("ingest", "delete") or (
        args.rag_command == "search" and (args.mode or settings.mode) != "bm25"
    )
    embedder: Embedder = build_embedder(settings) if needs_vectors else NoVectors()
    store = open_store(root, settings, embedder)
    try:
        return run(store, settings, args)
    except RetrievalError as exc:
        print(f"loragate: {exc.message}", file=sys.stderr)
        return 1


def run(store: CollectionStore, settings: RetrievalSettings, args: argparse.Namespace) -> int:
    command = args.rag_command
    if command == "ingest":
        return _ingest(store, args)
    if command == "list":
        return _list(store, args)
    if command == "search":
        mode = args.mode or settings.mode
        hits = store.search(args.collection, args.query, k=args.top_k or settings.top_k, mode=mode)
        results = [SearchResult.build(rank, hit) for rank, hit in enumerate(hits, start=1)]
        if args.json:
            print(json.dumps([r.model_dump() for r in results], indent=2))
            return 0
        for r in results:
            snippet = " ".join(r.text.split())[:SNIPPET_CHARS]
            print(f"[{r.rank}] {r.score:.4f}  {r.title} — {r.source}  ({r.chunk_id})")
            print(f"    {snippet}")
        return 0
    store.delete_document(args.collection, args.document_id)
    print(f"deleted {args.document_id} from {args.collection}")
    return 0


def _ingest(store: CollectionStore, args: argparse.Namespace) -> int:
    on_error: OnError = "skip" if args.skip_errors else "raise"
    inputs: list[str] = []
    outside: list[str] = []
    for path in args.paths:
        files, escaping = folder_files(path)
        inputs += files
        outside += escaping
    if outside and not args.follow_outside_links:
        for file in outside:
            print(f"loragate: {file} leads outside the folder given", file=sys.stderr)
        print(
            "loragate: nothing ingested; pass --follow-outside-links to ingest such links",
            file=sys.stderr,
        )
        return 2
    results = store.ingest(
        args.collection, inputs, on_error=on_error, progress=not args.no_progress
    )
    data = [
        {
            "status": r.status.value,
            "chunk_count": r.chunk_count,
            "source": r.source,
            "error": r.error.reason if r.error else None,
        }
        for r in results
    ]
    _print(data, ["status", "chunk_count", "source", "error"], args.json)
    return 1 if any(r.status is IngestStatus.REJECTED for r in results) else 0


def folder_files(path: str) -> tuple[list[str], list[str]]:
    """The files ``path`` names (a folder: its supported files, as ingest expands them)
    and, of those found inside a folder, the ones that resolve outside it (a link to a
    file elsewhere). A file named on the command line is taken as named, link or not."""
    if "://" in path or not Path(path).is_dir():
        return [path], []
    from retrieval.ingest import expand_paths

    folder = Path(path).resolve()
    files = list(expand_paths([path]))
    return files, [f for f in files if not Path(f).resolve().is_relative_to(folder)]


def _list(store: CollectionStore, args: argparse.Namespace) -> int:
    if args.collection is None:
        cards = [CollectionCard.build(c).model_dump() for c in store.list_collections()]
        columns = ["name", "document_count", "chunk_count", "embedder", "index_kind", "version"]
    else:
        cards = [DocumentCard.build(d).model_dump() for d in store.list_documents(args.collection)]
        columns = ["document_id", "chunk_count", "title", "source"]
    _print(cards, columns, args.json)
    return 0


def _print(data: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
        return
    rows = [[c.upper() for c in columns]]
    rows += [["" if row[c] is None else str(row[c]) for c in columns] for row in data]
    print(table(rows))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
