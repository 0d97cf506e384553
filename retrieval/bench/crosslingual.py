"""Questions in five languages over English manuals: one table, two corpora, each embedder.

    .venv/bin/python -m retrieval.bench.crosslingual                       # both corpora
    .venv/bin/python -m retrieval.bench.crosslingual --corpora sqlite --embedders dual
    .venv/bin/python -m retrieval.bench.crosslingual --check               # answer spans only

Corpora (``retrieval.bench.corpora``; fetched with ``apt-get download`` + ``dpkg -x``
into ``~/.cache/loragate/bench-corpora`` when not installed): the SQLite documentation
(``sqlite3-doc``, 766 pages, ``data/sqlite_questions.json``: 66 questions, 44 English and
22 in German, French, Spanish and Italian) and the PostgreSQL manual
(``postgresql-doc-15``, 300 of its 1,173 pages by default, ``data/postgresql_questions.json``:
80 questions, 20 English and 60 in French, German and Spanish).

Per corpus, embedder and search mode: ingestion seconds, chunks/s and chunks per
CPU-second of the process (extraction, chunking, embedding, indexing, commit; on a
shared machine wall time swells with the other jobs' load, CPU time much less) and the
cores it kept busy (CPU seconds per wall second: 2.0 is both cores of a 2-core machine);
answer@5 (a top-5 hit from the gold page holds the answer span) and page@10 (a top-10
hit comes from the gold page) for English questions and for the others; the search
latency p50/p99 per question (query embedding included). Every answer span is checked
against its page's extracted text before anything is ingested. ``--english-weights``
and ``--bm25-weights`` re-score the ``dual`` store with other query-time weights (no
re-embedding), and it is also scored with each of its two parts alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bench.corpora import (
    CORPORA,
    Corpus,
    check_questions,
    ensure_corpus,
    normal,
    select_pages,
)
from retrieval.bench.latency import synthetic_collection, time_searches
from retrieval.bench.multilingual import Timed, make_embedder
from retrieval.bench.report import percentiles_ms, print_table
from retrieval.config import RetrievalConfig
from retrieval.embedding import Embedder
from retrieval.search import SEARCH_MODES
from retrieval.store import CollectionStore

COLLECTION = "manual"


def score(
    store: CollectionStore, pages: Path, questions: Sequence[dict[str, Any]], mode: str
) -> tuple[dict[str, list[tuple[bool, bool]]], list[float]]:
    """Per language: (answer@5, page@10) of each question; and each search's seconds."""
    results: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    seconds = []
    store.search(COLLECTION, "warm up", k=1, mode=mode)  # type: ignore[arg-type]
    for q in questions:
        start = time.perf_counter()
        hits = store.search(COLLECTION, q["question"], k=10, mode=mode)  # type: ignore[arg-type]
        seconds.append(time.perf_counter() - start)
        gold = [Path(h.source).relative_to(pages).as_posix() == q["document"] for h in hits]
        answer = normal(q["answer"])
        found = any(g and answer in normal(h.text) for g, h in zip(gold[:5], hits[:5], strict=True))
        results[q["lang"]].append((found, any(gold)))
    return results, seconds


def rates(rows: Sequence[tuple[bool, bool]]) -> tuple[float, float]:
    count = max(len(rows), 1)
    return sum(r[0] for r in rows) / count, sum(r[1] for r in rows) / count


def parse_weights(text: str) -> list[tuple[float, float]]:
    pairs = []
    for item in filter(None, text.split(",")):
        a, b = item.split(":")
        pairs.append((float(a), float(b)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrieval.bench.crosslingual")
    parser.add_argument("--corpora", default="sqlite,postgresql")
    parser.add_argument("--embedders", default="minilm-int8,use-multilingual,dual")
    parser.add_argument("--modes", default="hybrid", help=f"some of {','.join(SEARCH_MODES)}")
    parser.add_argument("--pages", default="", help="e.g. sqlite=0,postgresql=300 (0: all)")
    parser.add_argument("--english-weights", default="", help="dual: MiniLM:USE pairs, 1:1,2:1")
    parser.add_argument(
        "--bm25-weights",
        default="",
        help="hybrid: cross_language_bm25_weight values to score too (e.g. 0.5,0.25)",
    )
    parser.add_argument(
        "--page-rerank",
        default="",
        help="dual, hybrid: page_rerank_chunks values to score too (e.g. 2,3; "
        "weight from --page-rerank-weight)",
    )
    parser.add_argument("--page-rerank-weight", type=float, default=0.5)
    parser.add_argument(
        "--cross-passages",
        default="",
        help="hybrid: cross_language_passage_tokens values to score too (e.g. 300,500)",
    )
    parser.add_argument(
        "--latency-chunks",
        type=int,
        default=15_000,
        help="also time hybrid search on a synthetic collection this large (0: no)",
    )
    parser.add_argument("--work-dir", type=Path, help="keep stores here (re-runs skip embedding)")
    parser.add_argument("--cache", type=Path, help="where fetched packages are unpacked")
    parser.add_argument("--check", action="store_true", help="check the answer spans and stop")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    counts = {k: int(v) for k, v in (p.split("=") for p in args.pages.split(",") if p)}
    located: list[tuple[Corpus, Path]] = []
    for name in filter(None, args.corpora.split(",")):
        corpus = CORPORA[name]
        pages = ensure_corpus(corpus, args.cache)
        if pages is None:
            continue
        problems = check_questions(corpus, pages)
        print(f"{name}: {len(corpus.questions())} questions, {len(problems)} problems ({pages})")
        for problem in problems:
            print("  " + problem)
        if problems:
            return 1
        located.append((corpus, pages))
    if args.check or not located:
        return 0
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    table: list[list[object]] = []
    languages: list[list[object]] = []
    scale: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-crosslingual-") as scratch:
        root = args.work_dir or Path(scratch)
        embedders: dict[str, Embedder] = {}
        for corpus, pages in located:
            chosen = select_pages(pages, corpus, counts.get(corpus.name, corpus.default_pages))
            for name in filter(None, args.embedders.split(",")):
                if name not in embedders:
                    embedders[name] = make_embedder(name)
                store = run_one(
                    corpus, pages, chosen, name, embedders[name], args, root, table, languages
                )
                if args.latency_chunks:
                    scale.append([corpus.name, name, *search_at_scale(store, corpus, args)])
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    headers = ["corpus", "embedder", "mode", "pages", "chunks", "ingest s", "chunks/s"]
    headers += ["chunks/CPU-s", "cores busy"]
    headers += ["en ans@5", "en page@10", "other ans@5", "other page@10", "p50 ms", "p99 ms"]
    print_table("Cross-language retrieval (top 10)", headers, table)
    if scale:
        print_table(
            f"Search at {args.latency_chunks:,} chunks (ms; index: query vector given)",
            ["corpus", "embedder", "chunks", "embed p50", "embed p99", "index p50", "index p99"],
            scale,
        )
    print_table(
        "Per language: answer@5 / page@10 (questions)",
        ["corpus", "embedder", "mode", "language", "ans@5", "page@10", "questions"],
        languages,
    )
    return 0


def run_one(
    corpus: Corpus,
    pages: Path,
    chosen: list[Path],
    name: str,
    embedder: Embedder,
    args: argparse.Namespace,
    root: Path,
    table: list[list[object]],
    languages: list[list[object]],
) -> CollectionStore:
    timed = Timed(embedder)
    config = RetrievalConfig()
    store = CollectionStore(root / f"{corpus.name}-{name}", timed, config)
    start, cpu_start = time.perf_counter(), time.process_time()
    results = store.ingest(COLLECTION, [str(p) for p in chosen], on_error="skip")
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    chunks = sum(d.chunk_count for d in store.list_documents(COLLECTION))
    embedded = sum(r.chunk_count for r in results if r.status != "unchanged")
    rate: object = embedded / total if embedded else "re-used"
    cpu_rate: object = embedded / cpu if embedded else "-"
    variants: list[tuple[str, Embedder]] = [(name, embedder)]
    if name == "dual":
        from retrieval.dual_embedding import DualEmbedder

        assert isinstance(embedder, DualEmbedder)
        for label, weights, route in [
            ("dual: MiniLM part only", (1.0, 0.0), False),
            ("dual: USE part only", (0.0, 1.0), False),
            ("dual 1:1 unrouted", (1.0, 1.0), False),
            *((f"dual {a:g}:{b:g}", (a, b), True) for a, b in parse_weights(args.english_weights)),
        ]:
            parts = (embedder.english, embedder.multilingual)
            variants.append((label, DualEmbedder(*parts, english_weights=weights, route=route)))
    questions = corpus.questions()
    default = (
        config.cross_language_bm25_weight,
        config.page_rerank_chunks,
        config.cross_language_passage_tokens,
    )
    tunings = [default]
    tunings += [(float(w), *default[1:]) for w in args.bm25_weights.split(",") if w]
    tunings += [(default[0], default[1], int(t)) for t in args.cross_passages.split(",") if t]
    if name == "dual":
        tunings += [(default[0], int(c), default[2]) for c in args.page_rerank.split(",") if c]
    for (label, variant), tuning in itertools.product(variants, tunings):
        weight, page_chunks, cross_passages = tuning
        tuned = dataclasses.replace(
            config,
            cross_language_bm25_weight=weight,
            page_rerank_chunks=page_chunks,
            page_rerank_weight=args.page_rerank_weight,
            cross_language_passage_tokens=cross_passages,
        )
        searcher = CollectionStore(store.root, variant, tuned)
        if weight != default[0]:
            label = f"{label}, cross-language BM25 x{weight:g}"
        if page_chunks != default[1]:
            label = f"{label}, page rerank {page_chunks} x{args.page_rerank_weight:g}"
        if cross_passages != default[2]:
            label = f"{label}, cross-language passages {cross_passages}"
        for mode in filter(None, args.modes.split(",")):
            tuned_only = tuning != default
            if tuned_only and mode != "hybrid":
                continue
            per_language, seconds = score(searcher, pages, questions, mode)
            english = rates(per_language["en"])
            others = rates([r for lang, rows in per_language.items() if lang != "en" for r in rows])
            p50, p99 = percentiles_ms(seconds)
            row: list[object] = [corpus.name, label, mode, len(chosen), chunks, total, rate]
            row += [cpu_rate, cpu / total]
            table.append([*row, *english, *others, p50, p99])
            for lang in sorted(per_language, key=lambda x: (x != "en", x)):
                ans, page = rates(per_language[lang])
                count = len(per_language[lang])
                languages.append([corpus.name, label, mode, lang, ans, page, count])
        print(f"done: {corpus.name} {label}", flush=True)
    return store


def search_at_scale(
    store: CollectionStore, corpus: Corpus, args: argparse.Namespace
) -> list[object]:
    """[chunks, query embedding p50, p99, hybrid index search p50, p99] on a synthetic
    collection of ``--latency-chunks`` chunks made from the ingested one
    (``retrieval.bench.latency``: copies with noise, exact index below the HNSW threshold)."""
    questions = [q["question"] for q in corpus.questions()]
    embed_seconds, vectors = [], []
    for question in questions:
        start = time.perf_counter()
        vectors.append(store.embedder.embed_query(question))
        embed_seconds.append(time.perf_counter() - start)
    synthetic = synthetic_collection(
        store.snapshot(COLLECTION), args.latency_chunks, store.index_settings
    )
    snapshot = (
        synthetic.exact if args.latency_chunks < store.config.hnsw_threshold else synthetic.graph
    )
    index = time_searches(snapshot, questions, np.stack(vectors), "hybrid")
    return [args.latency_chunks, *percentiles_ms(embed_seconds), *index]


if __name__ == "__main__":
    raise SystemExit(main())
