"""``loragate compare``: run an eval set through variants on a running gateway, report.

Exit status: 0 done, 1 done but some requests failed (they are retried by a rerun),
2 bad arguments or input files, 130 interrupted (finished answers are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.compare.eval_set import EvalFileError, load_eval_set
from gateway.compare.results import RESULTS_FILE, ResultsFile, item_fingerprint
from gateway.compare.variants import fingerprint, load_variants
from gateway.extras import COMPARE, MissingExtraError, require

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
KEY_ENV = ("LORAGATE_API_KEY", "OPENAI_API_KEY")
DEMO_KEYS_FILE = "demo-keys.json"  # written by `loragate demo` (gateway.demo.keys)
DEMO_TENANT = "acme"


def demo_key() -> str | None:
    """Tenant acme's key from a local ``loragate demo`` (its keys file), if there is one."""
    cache = Path(os.environ.get("LORAGATE_CACHE") or Path.home() / ".cache" / "loragate")
    try:
        data = json.loads((cache / DEMO_KEYS_FILE).read_text())
        return str(data["keys"][DEMO_TENANT]["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def demo_eval_dir() -> Path:
    """The eval set shipped for the demo's knowledge base (tenant acme, BrewPilot)."""
    return Path(str(resources.files("gateway.demo") / "eval"))


def add_compare_parser(sub: Any) -> None:
    """Add ``compare`` to the top-level ``loragate`` parser."""
    p = sub.add_parser(
        "compare",
        help="answer an eval set with several variants (prompt, RAG, LoRA) and compare them",
        description="Runs every eval item through every variant against a running gateway "
        "(OpenAI SDK, streaming, temperature 0), appends answers to OUT/results.jsonl as "
        "they finish (a rerun does only the missing ones), and writes OUT/report.md, "
        "report.json and PNG plots: fact accuracy and recall, citation accuracy, style, "
        "latency and tokens per variant and language, with paired bootstrap intervals.",
    )
    p.add_argument(
        "--base-url",
        default=os.environ.get("LORAGATE_BASE_URL", DEFAULT_BASE_URL),
        help="the gateway's OpenAI base URL, ending in /v1 (default: $LORAGATE_BASE_URL, "
        f"else {DEFAULT_BASE_URL})",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="API key (default: $LORAGATE_API_KEY, else $OPENAI_API_KEY, else with --demo "
        "the acme key of a local `loragate demo`)",
    )
    p.add_argument(
        "--eval",
        type=Path,
        metavar="FILE",
        help="eval set (JSONL; default: none, or the shipped one with --demo)",
    )
    p.add_argument(
        "--variants",
        type=Path,
        metavar="FILE",
        help="variants (YAML; default: none, or the shipped ones with --demo)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="use the eval set and variants shipped for `loragate demo` where --eval / "
        "--variants are not given, and the demo's acme key where no key is given",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="results folder")
    p.add_argument(
        "--retrieval",
        metavar="COLLECTION",
        help="also search COLLECTION with every item that names a source and write "
        "answer@5 and page@10 per language to OUT/retrieval.md and retrieval.json "
        "(with --eval alone: only these figures, no answers; default: no retrieval figures)",
    )
    p.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="requests in flight (default 4)"
    )
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="only the first N items (default: all)"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="per answer (default: the variants file's, else 128)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="per request, seconds (default 600)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="no requests: report the saved answers"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        require(COMPARE)  # the OpenAI SDK, matplotlib
    except MissingExtraError as exc:
        print(f"loragate compare: {exc}", file=sys.stderr)
        return 2
    paths = _input_paths(args)
    if paths is None:
        return 2
    eval_path, variants_path = paths
    try:
        items = load_eval_set(eval_path)
        variants = load_variants(variants_path) if variants_path is not None else None
    except EvalFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.limit is not None:
        items = items[: args.limit]
    if variants is None:
        return _retrieval_only(args, items)
    if args.max_tokens is not None:
        variants = variants.model_copy(update={"max_tokens": args.max_tokens})
    results = ResultsFile(args.out / RESULTS_FILE)
    failed = 0
    if not args.report_only:
        failed, status = _ask(args, items, variants, results)
        if status is not None:
            return status
    return _report(args, items, variants, results) or (1 if failed else 0)


def _input_paths(args: argparse.Namespace) -> tuple[Path, Path | None] | None:
    """The eval set and the variants file (None: retrieval only); None, said on stderr,
    when the arguments do not name them or ask for impossible counts."""
    eval_path, variants_path = args.eval, args.variants
    if args.demo:
        eval_path = eval_path or demo_eval_dir() / "eval.jsonl"
        variants_path = variants_path or demo_eval_dir() / "variants.yaml"
    retrieval_only = args.retrieval is not None and eval_path is not None and variants_path is None
    if eval_path is None or (variants_path is None and not retrieval_only):
        print("loragate compare: give --eval FILE and --variants FILE (or --demo)", file=sys.stderr)
        return None
    if args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        print("loragate compare: --concurrency and --limit must be >= 1", file=sys.stderr)
        return None
    return eval_path, variants_path


def _ask(
    args: argparse.Namespace, items: Any, variants: Any, results: ResultsFile
) -> tuple[int, int | None]:
    """Send every item to every variant (and the retrieval check when asked): the number
    of failed requests, and the exit status when the run stopped early."""
    api_key = _api_key(args)
    if not api_key:
        print("loragate compare: give --api-key or set $LORAGATE_API_KEY", file=sys.stderr)
        return 0, 2
    failed = 0
    try:
        if args.retrieval is not None:
            failed += asyncio.run(_retrieval(args, api_key, items))
        failed += asyncio.run(_run(args, api_key, items, variants, results))
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: {len(results.records)} answers are saved in {results.path}; "
            "run the same command again to finish",
            file=sys.stderr,
        )
        return failed, 130
    finally:
        results.close()
    return failed, None


async def _run(
    args: argparse.Namespace, api_key: str, items: Any, variants: Any, results: ResultsFile
) -> int:
    import openai

    from gateway.compare.runner import run_pairs

    client = openai.AsyncOpenAI(
        base_url=args.base_url, api_key=api_key, timeout=args.timeout, max_retries=2
    )
    try:
        summary = await run_pairs(
            client,
            items,
            variants,
            results,
            max_tokens=variants.max_tokens,
            concurrency=args.concurrency,
            progress=not args.no_progress,
            busy_wait_s=args.timeout,
        )
    finally:
        await client.close()
    print(
        f"{summary.planned} pairs: {summary.skipped} already answered, "
        f"{summary.answered} answered now, {summary.failed} failed"
    )
    for line in summary.errors[:10]:
        print(f"  failed: {line}", file=sys.stderr)
    return summary.failed


def _api_key(args: argparse.Namespace) -> str | None:
    api_key = args.api_key or next((os.environ[k] for k in KEY_ENV if os.environ.get(k)), None)
    return api_key or (demo_key() if args.demo else None)


def _retrieval_only(args: argparse.Namespace, items: Any) -> int:
    api_key = _api_key(args)
    if not api_key:
        print("loragate compare: give --api-key or set $LORAGATE_API_KEY", file=sys.stderr)
        return 2
    return 1 if asyncio.run(_retrieval(args, api_key, items)) else 0


async def _retrieval(args: argparse.Namespace, api_key: str, items: Any) -> int:
    """Search figures for ``args.retrieval``; 1 when the gateway refused the searches."""
    import openai

    from gateway.compare.search_quality import search_outcomes, write_figures

    client = openai.AsyncOpenAI(
        base_url=args.base_url, api_key=api_key, timeout=args.timeout, max_retries=2
    )
    try:
        outcomes = await search_outcomes(
            client, items, args.retrieval, concurrency=args.concurrency
        )
    except openai.APIError as exc:
        print(f"loragate compare: retrieval figures: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.close()
    rows, paths = write_figures(args.out, args.retrieval, outcomes)
    for row in rows:
        print(
            f"- retrieval {args.retrieval} {row.group}: answer@5 {row.answer_at_k:.2f}, "
            f"page@10 {row.page_at_k:.2f} ({row.questions} questions)"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _report(args: argparse.Namespace, items: Any, variants: Any, results: ResultsFile) -> int:
    from gateway.compare.plots import write_plots
    from gateway.compare.report import build_report, write_report

    records, stale = results.current(
        {item.id: item_fingerprint(item) for item in items},
        {v.name: fingerprint(v, variants.max_tokens) for v in variants.variants},
    )
    if stale:
        print(
            f"{stale} saved answers were made with other inputs (item, variant or "
            "--max-tokens) and are left out; run without --report-only to redo them",
            file=sys.stderr,
        )
    report = build_report(items, variants, records, seed=args.seed, resamples=args.resamples)
    paths = write_report(report, args.out) + write_plots(report, args.out)
    for text in report.sentences.values():
        print(f"- {text}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
