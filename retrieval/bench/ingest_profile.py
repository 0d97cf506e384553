"""Where ingestion time goes, per embedder, on the PostgreSQL manual (prints Markdown).

    .venv/bin/python -m retrieval.bench.ingest_profile --embedders minilm,minilm-int8

Each stage of ``CollectionStore.ingest`` is timed in wall seconds and in process CPU
seconds (all threads: ONNX Runtime and torch run their own). Other jobs on a shared
machine inflate wall time but barely CPU time, so ``chunks per CPU-second x cores`` is
the fair estimate of what a quiet machine does; the load average is printed with each
row. The same pages and questions as ``retrieval.bench.multilingual`` give recall
(gold-document R@10 and answer-in-top-5, English questions and all questions, hybrid)
so a faster embedder can be checked against the quality it keeps.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from retrieval import ingest
from retrieval.bench.multilingual import (
    DEFAULT_CORPUS,
    make_embedder,
    questions_and_pages,
    score,
)
from retrieval.bench.report import print_table
from retrieval.collection import CollectionDirectory, Snapshot
from retrieval.store import CollectionStore

STAGES = ("extract", "chunk", "embed", "index", "commit")


class StageClock:
    """Adds up wall and process-CPU seconds per stage (stages never overlap here)."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - wall
            self.cpu[name] += time.process_time() - cpu

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timed


@contextlib.contextmanager
def instrumented(store: CollectionStore, clock: StageClock) -> Iterator[None]:
    """Time the stages of ``store.ingest`` by wrapping the functions each stage calls."""
    patches: list[tuple[Any, str, Any]] = [
        (ingest, "extract", ingest.extract),
        (store.preparer.chunker, "chunk", store.preparer.chunker.chunk),
        (store.embedder, "embed_documents", store.embedder.embed_documents),
        (Snapshot, "updated", Snapshot.updated),
        (CollectionDirectory, "commit", CollectionDirectory.commit),
    ]
    for (owner, attribute, original), stage in zip(patches, STAGES, strict=True):
        setattr(owner, attribute, clock.wrap(stage, original))
    try:
        yield
    finally:
        for owner, attribute, original in patches:
            if isinstance(owner, (type, types.ModuleType)):
                setattr(owner, attribute, original)
            else:  # an instance: drop the attribute that shadows the bound method
                delattr(owner, attribute)


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrieval.bench.ingest_profile")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--pages", type=int, default=100, help="0: every page")
    parser.add_argument("--embedders", default="minilm,minilm-int8")
    parser.add_argument("--no-quality", action="store_true", help="skip the recall table")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    found = questions_and_pages(args.corpus, args.pages)
    if found is None:
        return 0
    questions, pages = found
    cores = len(os.sched_getaffinity(0))
    print(f"corpus: {len(pages)} pages of {args.corpus}; {cores} cores")
    speed: list[list[object]] = []
    stages: list[list[object]] = []
    quality: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        for name in [n for n in args.embedders.split(",") if n]:
            embedder = make_embedder(name)
            store = CollectionStore(Path(scratch) / name, embedder)
            clock = StageClock()
            load_before = load_text()
            wall, cpu = time.perf_counter(), time.process_time()
            with instrumented(store, clock):
                store.ingest("manual", [str(p) for p in pages], on_error="skip")
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            chunks = sum(d.chunk_count for d in store.list_documents("manual"))
            load = f"{load_before} -> {load_text()}"
            speed.append(
                [name, chunks, wall, chunks / wall, cpu, chunks / cpu, cores * chunks / cpu, load]
            )
            for stage in STAGES:
                share = clock.cpu[stage] / cpu if cpu else 0.0
                stages.append([name, stage, clock.wall[stage], clock.cpu[stage], f"{share:.1%}"])
            if not args.no_quality:
                for mode in ("dense", "hybrid"):
                    groups = score(store, questions, mode)
                    en, other = groups["en"], groups["non-en"]
                    quality.append([name, mode, en[0], en[1], other[0], other[1]])
    print_table(
        "Ingestion (wall and process CPU seconds)",
        [
            "embedder",
            "chunks",
            "wall s",
            "chunks/s",
            "CPU s",
            "chunks/CPU-s",
            f"x{cores} cores",
            "load 1/5 min",
        ],
        speed,
    )
    print_table("Stages", ["embedder", "stage", "wall s", "CPU s", "CPU share"], stages)
    if quality:
        print_table(
            "Quality: gold-document recall@10 and answer-in-top-5",
            ["embedder", "mode", "en R@10", "en ans@5", "non-en R@10", "non-en ans@5"],
            quality,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
