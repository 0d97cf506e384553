"""Retrieval benchmark: ``python -m retrieval.bench`` (prints Markdown tables).

(a) labelled evaluation on the Debian Reference (install: ``apt-get update &&
    apt-get install -y debian-reference-en``): recall@1/5/10 and MRR per search mode,
    plus how often chunks overflow MiniLM's 256 word-pieces at several chunk sizes;
(b) search latency p50/p99 at 1k, 10k and 100k chunks (synthetic, derived from (a));
(c) ingestion throughput: the real MiniLM pipeline, and the pipeline around it.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from retrieval.bench.evaluation import (
    DEFAULT_CORPUS,
    Question,
    TimedEmbedder,
    check_labels,
    corpus_files,
    evaluate,
    load_questions,
    truncation_rows,
)
from retrieval.bench.latency import latency_rows
from retrieval.bench.report import percentiles_ms, print_table
from retrieval.bench.throughput import pipeline_rows
from retrieval.config import RetrievalConfig
from retrieval.embedding import SentenceTransformerEmbedder
from retrieval.index import IndexSettings
from retrieval.store import CollectionStore

COLLECTION = "debian-reference"


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m retrieval.bench", description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep the stores here (a second run re-uses the embedded corpus: unchanged "
        "documents are skipped); default: a temporary directory",
    )
    parser.add_argument("--sizes", type=_ints, default=[1_000, 10_000, 100_000])
    parser.add_argument("--chunk-tokens", type=int, default=RetrievalConfig().chunk_tokens)
    parser.add_argument("--truncation-sizes", type=_ints, default=[128, 180, 256])
    parser.add_argument("--pipeline-copies", type=int, default=4)
    parser.add_argument("--skip", default="", help="comma-separated: latency,pipeline")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    questions = load_questions()
    files = corpus_files(args.corpus)
    check_labels(files, questions)
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as scratch:
        run(args, files, questions, args.work_dir or Path(scratch))


def run(
    args: argparse.Namespace, files: list[Path], questions: list[Question], work_dir: Path
) -> None:
    import faiss
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), faiss {faiss.__version__}"
    )
    print(f"corpus: {len(files)} files from {args.corpus}; {len(questions)} labelled questions")
    start = time.perf_counter()
    minilm = SentenceTransformerEmbedder()
    print(f"MiniLM load: {time.perf_counter() - start:.1f} s")

    print_table(
        "MiniLM input length per chunk size (heading line included; limit 256 word-pieces)",
        ["chunk tokens (cl100k)", "chunks", "median WP", "p95 WP", "max WP", "> 256 WP"],
        truncation_rows(files, minilm, args.truncation_sizes),
    )

    embedder = TimedEmbedder(minilm)
    config = RetrievalConfig(chunk_tokens=args.chunk_tokens)
    store = CollectionStore(work_dir / f"eval-{args.chunk_tokens}", embedder, config)
    start = time.perf_counter()
    results = store.ingest(COLLECTION, files)
    total = time.perf_counter() - start
    chunks = sum(d.chunk_count for d in store.list_documents(COLLECTION))
    embedded = sum(r.chunk_count for r in results if r.status != "unchanged")
    rate = f"{embedded / total:.1f}" if embedded else "- (store re-used)"
    embed_rate = f"{embedded / embedder.seconds:.1f}" if embedder.seconds else "-"
    print_table(
        f"(c) Ingestion with MiniLM (chunk_tokens={args.chunk_tokens})",
        ["documents", "chunks", "embedded", "total s", "chunks/s", "embed s", "embed chunks/s"],
        [[len(files), chunks, embedded, total, rate, embedder.seconds, embed_rate]],
    )

    scores = evaluate(store, COLLECTION, questions)
    print_table(
        f"(a) Retrieval quality, {len(questions)} questions, top 10 "
        "(latency end to end, query embedding included)",
        ["mode", "recall@1", "recall@5", "recall@10", "MRR@10", "p50 ms", "p99 ms"],
        [
            [s.mode, s.recall_at_1, s.recall_at_5, s.recall_at_10, s.mrr_at_10, s.p50_ms, s.p99_ms]
            for s in scores
        ],
    )
    for s in scores:
        print(f"{s.mode} misses (question ids): {s.misses}")

    texts = [q.question for q in questions]
    seconds = []
    vectors = []
    for text in texts * 2:
        start = time.perf_counter()
        vectors.append(minilm.embed_query(text))
        seconds.append(time.perf_counter() - start)
    p50, p99 = percentiles_ms(seconds)
    print(f"\nMiniLM query embedding: p50 {p50:.1f} ms, p99 {p99:.1f} ms")

    skip = set(args.skip.split(","))
    if "latency" not in skip:
        hnsw = IndexSettings(
            hnsw_m=config.hnsw_m,
            ef_construction=config.hnsw_ef_construction,
            ef_search=config.hnsw_ef_search,
            use_gpu=config.use_gpu,
        )
        latency, builds = latency_rows(
            store.snapshot(COLLECTION), args.sizes, texts, np.stack(vectors[: len(texts)]), hnsw
        )
        print_table(
            "(b) Search latency, top 10, query vector precomputed (ms)",
            [
                *("chunks", "dense index", "dense p50", "dense p99"),
                *("bm25 p50", "bm25 p99", "hybrid p50", "hybrid p99"),
            ],
            latency,
        )
        print_table(
            "(b) Index build and HNSW quality",
            [
                *("chunks", "flat build s", f"hnsw build s (M={config.hnsw_m})", "bm25 build s"),
                *(f"hnsw recall@10 (ef={config.hnsw_ef_search})", "rank_bm25 p50 ms"),
            ],
            builds,
        )
    if "pipeline" not in skip:
        print_table(
            "(c) Pipeline without the model (instant embedder): extract, chunk, index, commit",
            ["step", "documents", "chunks", "seconds", "chunks/s"],
            pipeline_rows(files, work_dir, args.pipeline_copies),
        )


if __name__ == "__main__":
    main()
