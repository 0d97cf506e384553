"""Multilingual retrieval benchmark on the PostgreSQL manual (prints Markdown tables).

    apt-get update && apt-get install -y postgresql-doc-15      # 1,173 HTML pages, 18 MB
    .venv/bin/python -m retrieval.bench.multilingual            # ~300 pages, MiniLM
    .venv/bin/python -m retrieval.bench.multilingual --embedders minilm,minilm-onnx,use

``data/postgresql_questions.json`` holds 80 questions (20 topics x en/fr/de/es), each
with its gold page and an answer string from that page. Per embedder it reports, per
search mode and for English and non-English questions: gold-document recall@10 (a top-10
hit comes from the gold page) and answer-in-top-5 (a top-5 hit from the gold page
contains the answer string, case, accents and whitespace ignored), answer-in-budget
(the same, over the hits that fit in 1,500 cl100k tokens: chunks and passages compared
at equal prompt cost) and the mean tokens of the top 5 hits; and ingestion chunks/s
(extraction, chunking, embedding, indexing, commit). ``--passages 0,300`` scores
several ``RetrievalConfig.passage_tokens`` values on one ingested store.

The corpus is the gold pages plus an even sample of the other pages, ``--pages`` in all
(``--pages 0``: every page). Only the stable ``CollectionStore`` API is used, so the
same script measures another checkout (``PYTHONPATH=<other tree>``) side by side.
Without the package it prints how to install it and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.bench.report import print_table
from retrieval.config import RetrievalConfig
from retrieval.embedding import Embedder
from retrieval.store import CollectionStore
from retrieval.tokens import count_tokens

DEFAULT_CORPUS = Path("/usr/share/doc/postgresql-doc-15/html")
QUESTIONS = Path(__file__).with_name("data") / "postgresql_questions.json"
MODES = ("dense", "bm25", "hybrid")
BUDGET_TOKENS = 1500
"""Context budget of the answer-in-budget score (the gateway's default context_tokens)."""
BUDGET_HITS = 20
INSTALL_HINT = (
    "skipped: the PostgreSQL manual is not installed. Install it with\n"
    "    apt-get update && apt-get install -y postgresql-doc-15\n"
    "or pass --corpus DIR (a folder of the manual's *.html pages)."
)


def normal(text: str) -> str:
    """Lowercase, accents removed, whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def select_pages(corpus: Path, gold: set[str], count: int) -> list[Path]:
    """Gold pages plus every n-th other page (sorted by name) up to ``count`` pages."""
    pages = sorted(corpus.glob("*.html"))
    if count <= 0 or count >= len(pages):
        return pages
    chosen = [p for p in pages if p.name in gold]
    others = [p for p in pages if p.name not in gold]
    wanted = max(count - len(chosen), 0)
    step = len(others) / max(wanted, 1)
    chosen += [others[int(i * step)] for i in range(min(wanted, len(others)))]
    return sorted(chosen)


def questions_and_pages(corpus: Path, count: int) -> tuple[list[dict[str, Any]], list[Path]] | None:
    """The question set and the pages to ingest (``select_pages``); ``None``, with the
    reason printed, when the corpus or one of its gold pages is not installed."""
    if not any(corpus.glob("*.html")):
        print(INSTALL_HINT)
        return None
    questions = json.loads(QUESTIONS.read_text(encoding="utf-8"))["questions"]
    gold = {q["document"] for q in questions}
    missing = sorted(g for g in gold if not (corpus / g).is_file())
    if missing:
        print(f"skipped: gold pages missing from {corpus}: {missing}")
        return None
    return questions, select_pages(corpus, gold, count)


def make_embedder(name: str) -> Embedder:
    """The embedders this benchmark knows, by short name."""
    from retrieval import embedding

    if name == "minilm":
        return embedding.SentenceTransformerEmbedder()
    factory = getattr(embedding, "embedder_from_name", None)  # absent in older checkouts
    if factory is None:
        raise SystemExit(f"embedder {name!r} is not available in this checkout")
    result: Embedder = factory(name)
    return result


class Timed:
    """Adds up the seconds spent embedding documents."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.seconds = 0.0
        if hasattr(inner, "chunk_tokenizer"):
            self.chunk_tokenizer = inner.chunk_tokenizer

    def embed_documents(self, texts: Sequence[str]) -> Any:
        start = time.perf_counter()
        vectors = self.inner.embed_documents(texts)
        self.seconds += time.perf_counter() - start
        return vectors

    def embed_query(self, text: str) -> Any:
        return self.inner.embed_query(text)


def library_config(chunk_tokens: int | None) -> RetrievalConfig:
    """Default settings, with ``chunk_tokens`` if given (fields that exist only)."""
    names = {f.name for f in dataclasses.fields(RetrievalConfig)}
    values: dict[str, Any] = {}
    if chunk_tokens:
        values["chunk_tokens"] = chunk_tokens
    return RetrievalConfig(**{k: v for k, v in values.items() if k in names})


def with_passages(config: RetrievalConfig, passage_tokens: int) -> RetrievalConfig:
    """``config`` returning passages of ``passage_tokens`` (a checkout without the
    setting only measures 0)."""
    names = {f.name for f in dataclasses.fields(RetrievalConfig)}
    if "passage_tokens" not in names:
        if passage_tokens:
            raise SystemExit("--passages needs a checkout with RetrievalConfig.passage_tokens")
        return config
    return dataclasses.replace(config, passage_tokens=passage_tokens)


def score(
    store: CollectionStore, questions: Sequence[dict[str, Any]], mode: str
) -> dict[str, tuple[float, ...]]:
    """Per language group: (gold recall@10, answer-in-top-5, answer-in-budget,
    questions); under ``"tokens"``: (mean cl100k tokens of the top 5 hits' text,).

    Answer-in-budget reads the hits in rank order while they fit in ``BUDGET_TOKENS``
    (the gateway's default ``context_tokens``): it compares single chunks and passages
    at the same prompt cost, where answer-in-top-5 favours longer hits."""
    groups: dict[str, list[tuple[bool, bool, bool]]] = {"en": [], "non-en": []}
    tokens: list[int] = []
    for q in questions:
        hits = store.search("manual", q["question"], k=BUDGET_HITS, mode=mode)  # type: ignore[arg-type]
        sizes = [count_tokens(h.text) for h in hits]
        tokens.append(sum(sizes[:5]))
        answer = normal(q["answer"])
        holding = [Path(h.source).name == q["document"] and answer in normal(h.text) for h in hits]
        gold = any(Path(h.source).name == q["document"] for h in hits[:10])
        fits = [used <= BUDGET_TOKENS for used in itertools.accumulate(sizes)]
        row = (gold, any(holding[:5]), any(h and f for h, f in zip(holding, fits, strict=True)))
        groups["en" if q["lang"] == "en" else "non-en"].append(row)
    result: dict[str, tuple[float, ...]] = {
        name: (*(sum(r[i] for r in rows) / max(len(rows), 1) for i in range(3)), len(rows))
        for name, rows in groups.items()
    }
    result["tokens"] = (sum(tokens) / max(len(tokens), 1),)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrieval.bench.multilingual")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--pages", type=int, default=300, help="0: every page")
    parser.add_argument("--embedders", default="minilm", help="comma-separated short names")
    parser.add_argument("--chunk-tokens", type=int, default=0, help="0: the library default")
    parser.add_argument("--work-dir", type=Path, help="keep stores here (re-runs skip embedding)")
    parser.add_argument(
        "--passages",
        default="",
        help="comma-separated passage_tokens values searched on the same store "
        "(0: single chunks; default: the library's)",
    )
    parser.add_argument("--label", default="", help="shown in the tables (e.g. before/after)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    found = questions_and_pages(args.corpus, args.pages)
    if found is None:
        return 0
    questions, pages = found
    load = os.getloadavg()
    print(f"corpus: {len(pages)} pages of {args.corpus}; {len(questions)} questions")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-multilingual-") as scratch:
        root = args.work_dir or Path(scratch)
        quality: list[list[object]] = []
        speed: list[list[object]] = []
        for name in [n for n in args.embedders.split(",") if n]:
            run_one(name, args, pages, questions, root, quality, speed)
    label = f" ({args.label})" if args.label else ""
    print_table(
        f"Ingestion{label}",
        ["embedder", "pages", "chunks", "total s", "chunks/s", "embed s", "embed chunks/s"],
        speed,
    )
    print_table(
        f"Quality{label}: gold-document recall@10 and answer-in-top-5",
        [
            "embedder",
            "passage",
            "mode",
            "en R@10",
            "en ans@5",
            f"en ans@{BUDGET_TOKENS}t",
            "non-en R@10",
            "non-en ans@5",
            f"non-en ans@{BUDGET_TOKENS}t",
            "top-5 tokens",
        ],
        quality,
    )
    return 0


def run_one(
    name: str,
    args: argparse.Namespace,
    pages: list[Path],
    questions: list[dict[str, Any]],
    root: Path,
    quality: list[list[object]],
    speed: list[list[object]],
) -> None:
    embedder = Timed(make_embedder(name))
    config = library_config(args.chunk_tokens)
    store = CollectionStore(root / f"{name}-{args.chunk_tokens}", embedder, config)
    start = time.perf_counter()
    results = store.ingest("manual", [str(p) for p in pages], on_error="skip")
    total = time.perf_counter() - start
    chunks = sum(d.chunk_count for d in store.list_documents("manual"))
    embedded = sum(r.chunk_count for r in results if r.status != "unchanged")
    rate = f"{embedded / total:.1f}" if embedded else "- (re-used)"
    embed_rate = f"{embedded / embedder.seconds:.1f}" if embedder.seconds else "-"
    speed.append([name, len(pages), chunks, total, rate, embedder.seconds, embed_rate])
    default = getattr(config, "passage_tokens", 0)
    for passage in [int(p) for p in args.passages.split(",") if p] or [default]:
        searcher = CollectionStore(store.root, embedder, with_passages(config, passage))
        for mode in MODES:
            groups = score(searcher, questions, mode)
            en, other, cost = groups["en"], groups["non-en"], groups["tokens"][0]
            quality.append([name, passage, mode, *en[:3], *other[:3], round(cost)])
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
