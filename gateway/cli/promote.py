"""``loragate adapters promote NAME@VERSION --eval-set FILE``: the evaluation gate.

Runs the eval set (``loragate compare``'s JSONL format) through the gateway's OpenAI
API twice, on the candidate ``NAME@VERSION`` and on the stable version (the one active
now), both named in the pinned ``name@version`` form, which bypasses any traffic split.
Each item is scored with compare's scorer and the paired bootstrap interval of
candidate - stable decides (``gateway.compare.gate``). A pass activates the candidate
through ``POST /admin/adapters/{name}/promote`` (which also ends a split naming it and
writes the audit entry); ``--dry-run`` only prints.

Two credentials: the admin key (``--admin-key``) reads the adapter and promotes it; the
eval requests are sent with an API key (``--api-key``) whose tenant may call NAME,
exactly as a client's requests are (a tenant reaches only the names its route allows).

Exit status: 0 promoted (with ``--dry-run``: would be), 1 not promoted (the candidate
is worse beyond the margin, a request failed, or the gateway refused or could not be
reached), 2 bad arguments, eval set, or unknown adapter or version.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO, cast

import httpx

from adapters.naming import NAME_PATTERN, VERSION_PATTERN
from gateway.cli.admin_client import AdminAPIError, AdminClient, default_admin_key, default_url
from gateway.compare.eval_set import EvalFileError, EvalItem, load_eval_set
from gateway.compare.gate import GateResult, decide, format_gate, item_scores
from gateway.compare.results import RESULTS_FILE, AnswerRecord, ResultsFile, item_fingerprint
from gateway.compare.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED
from gateway.compare.variants import DEFAULT_MAX_TOKENS, Variant, VariantSet, fingerprint
from gateway.extras import COMPARE, MissingExtraError, require

API_KEY_ENVS = ("LORAGATE_API_KEY", "OPENAI_API_KEY")
CANDIDATE, STABLE = "candidate", "stable"


class UsageError(Exception):
    """Bad arguments, eval set, adapter or version: exit status 2."""


class NotPromoted(Exception):
    """The gateway refused or failed: exit status 1."""


def add_promote_parser(cmds: Any, common: argparse.ArgumentParser) -> None:
    """Add ``promote`` to ``loragate adapters``."""
    p = cmds.add_parser(
        "promote",
        parents=[common],
        help="activate a version only if an eval set finds it not worse than the active one",
        description="Answers the eval set with NAME@VERSION and with NAME's active version "
        "(temperature 0, through the OpenAI API), scores each item with loragate compare's "
        "scorer, and activates VERSION only when the paired bootstrap interval of "
        "candidate - stable has its lower bound >= -MARGIN.",
    )
    p.add_argument("target", metavar="NAME@VERSION", help="the candidate version")
    p.add_argument(
        "--eval-set", type=Path, required=True, metavar="FILE", help="eval set (compare's JSONL)"
    )
    p.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="how much worse (mean item score, 0..1) the candidate may be (default 0: not worse)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the decision, change nothing")
    p.add_argument(
        "--api-key",
        default=None,
        help="API key of a tenant allowed NAME, for the eval requests (default: "
        "$LORAGATE_API_KEY, else $OPENAI_API_KEY)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        metavar="N",
        help=f"per answer (default {DEFAULT_MAX_TOKENS})",
    )
    p.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="requests in flight (default 4)"
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, metavar="S", help="per request (default 600)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the answers in DIR/results.jsonl (a rerun asks only the missing ones; "
        "default: a temporary folder)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap seed (default 0)")
    p.add_argument(
        "--resamples",
        type=int,
        default=DEFAULT_RESAMPLES,
        help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class Plan:
    name: str
    candidate: str
    stable: str
    items: list[EvalItem]
    api_key: str


def cmd_promote(args: argparse.Namespace) -> int:
    return asyncio.run(run_promote(args))


async def run_promote(
    args: argparse.Namespace,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    out: TextIO | None = None,
) -> int:
    """The command; ``transport`` lets tests talk to an in-process app (both the admin
    calls and the OpenAI SDK's requests go through it)."""
    out = out or sys.stdout
    try:
        require(COMPARE)  # the OpenAI SDK, numpy
        items, name, version, api_key = _inputs(args)
        return await _promote(args, Plan(name, version, "", items, api_key), transport, out)
    except (UsageError, MissingExtraError) as exc:
        print(f"loragate adapters promote: {exc}", file=sys.stderr)
        return 2
    except NotPromoted as exc:
        print(f"loragate adapters promote: {exc}", file=sys.stderr)
        return 1


def _inputs(args: argparse.Namespace) -> tuple[list[EvalItem], str, str, str]:
    name, sep, version = args.target.partition("@")
    if not sep or not NAME_PATTERN.fullmatch(name) or not VERSION_PATTERN.fullmatch(version):
        raise UsageError(f"give the candidate as NAME@VERSION, not {args.target!r}")
    if args.margin < 0 or args.max_tokens < 1 or args.concurrency < 1 or args.resamples < 1:
        raise UsageError("--margin must be >= 0; --max-tokens, --concurrency, --resamples >= 1")
    try:
        items = load_eval_set(args.eval_set)
    except EvalFileError as exc:
        raise UsageError(str(exc)) from None
    api_key = args.api_key or next((os.environ[k] for k in API_KEY_ENVS if os.environ.get(k)), None)
    if not api_key:
        raise UsageError("give --api-key (a tenant allowed NAME) or set $LORAGATE_API_KEY")
    return items, name, version, api_key


async def _promote(
    args: argparse.Namespace,
    request: Plan,
    transport: httpx.AsyncBaseTransport | None,
    out: TextIO,
) -> int:
    url = args.url or default_url()
    name, version = request.name, request.candidate
    admin_key = args.admin_key or default_admin_key()
    async with AdminClient(url, admin_key, transport=transport) as admin:
        stable = await _stable_version(admin, name, version)
        plan = replace(request, stable=stable)
        records, failed = await _answers(args, url, plan, transport)
        candidate_scores = item_scores(plan.items, records[CANDIDATE])
        stable_scores = item_scores(plan.items, records[STABLE])
        result = decide(
            candidate_scores,
            stable_scores,
            margin=args.margin,
            resamples=args.resamples,
            seed=args.seed,
            confidence=DEFAULT_CONFIDENCE,
        )
        _print(args, plan, result, out)
        note = sys.stderr if args.json else out  # --json: stdout holds the JSON alone
        if failed:
            raise NotPromoted(f"{failed} eval request(s) failed: nothing promoted")
        if not result.passed:
            print(f"not promoted: {name}@{stable} stays active", file=note)
            return 1
        if args.dry_run:
            print(f"dry run: {name}@{version} passes the gate; nothing changed", file=note)
            return 0
        body = {"version": version, "stable": stable, "gate": _figures(args, result)}
        try:
            await admin.request("POST", f"/admin/adapters/{name}/promote", json=body)
        except AdminAPIError as exc:
            raise NotPromoted(str(exc)) from None
        print(f"promoted: {name}@{version} is active (was {stable})", file=note)
    return 0


async def _stable_version(admin: AdminClient, name: str, version: str) -> str:
    """NAME's active version, after checking that NAME@VERSION may be promoted."""
    try:
        info = await admin.show(name)
    except AdminAPIError as exc:
        if exc.status == 404:
            raise UsageError(f"no adapter named {name!r}") from None
        raise NotPromoted(str(exc)) from None
    statuses = {v["version"]: v["status"] for v in info["versions"]}
    if statuses.get(version) in (None, "retiring"):
        raise UsageError(f"{name!r} has no version {version!r} that can be served")
    stable = info.get("active_version")
    if stable is None:
        raise UsageError(f"{name!r} has no active version to compare against")
    if stable == version:
        raise UsageError(f"{name}@{version} is already the active version")
    return str(stable)


async def _answers(
    args: argparse.Namespace, url: str, plan: Plan, transport: httpx.AsyncBaseTransport | None
) -> tuple[dict[str, dict[str, AnswerRecord]], int]:
    """Every item answered by both versions: ``variant -> item id -> record``, and how
    many requests failed."""
    import openai

    from gateway.compare.runner import run_pairs

    variants = VariantSet(
        max_tokens=args.max_tokens,
        variants=[
            Variant(name=CANDIDATE, adapter=f"{plan.name}@{plan.candidate}"),
            Variant(name=STABLE, adapter=f"{plan.name}@{plan.stable}"),
        ],
    )
    with tempfile.TemporaryDirectory(prefix="loragate-promote-") as tmp:
        results = ResultsFile((args.out or Path(tmp)) / RESULTS_FILE)
        http = httpx.AsyncClient(transport=transport) if transport is not None else None
        client = openai.AsyncOpenAI(
            base_url=url.rstrip("/") + "/v1",
            api_key=plan.api_key,
            timeout=args.timeout,
            max_retries=2,
            http_client=cast(Any, http),  # the SDK takes httpx clients too (tests)
        )
        try:
            summary = await run_pairs(
                client,
                plan.items,
                variants,
                results,
                max_tokens=args.max_tokens,
                concurrency=args.concurrency,
                progress=not args.no_progress,
                busy_wait_s=args.timeout,
            )
        finally:
            await client.close()
            results.close()
        current, _ = results.current(
            {item.id: item_fingerprint(item) for item in plan.items},
            {v.name: fingerprint(v, args.max_tokens) for v in variants.variants},
        )
    for line in summary.errors[:10]:
        print(f"  failed: {line}", file=sys.stderr)
    by_variant: dict[str, dict[str, AnswerRecord]] = {CANDIDATE: {}, STABLE: {}}
    for (item_id, variant), record in current.items():
        by_variant[variant][item_id] = record
    failed = sum(not r.ok for answers in by_variant.values() for r in answers.values())
    return by_variant, failed


def _eval_set_id(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{path.name[:150]} sha256:{digest}"


def _figures(args: argparse.Namespace, result: GateResult) -> dict[str, Any]:
    d = result.difference
    return {
        "items": result.items,
        "candidate_mean": result.candidate_mean,
        "stable_mean": result.stable_mean,
        "low": d.low,
        "high": d.high,
        "confidence": result.confidence,
        "margin": result.margin,
        "resamples": result.resamples,
        "seed": result.seed,
        "eval_set": _eval_set_id(args.eval_set),
    }


def _print(args: argparse.Namespace, plan: Plan, result: GateResult, out: TextIO) -> None:
    if args.json:
        figures = _figures(args, result) | {"estimate": result.difference.estimate}
        data = {
            "name": plan.name,
            "candidate": plan.candidate,
            "stable": plan.stable,
            "passed": result.passed,
            **figures,
        }
        print(json.dumps(data, indent=2), file=out)
    else:
        print(format_gate(plan.name, plan.candidate, plan.stable, result), file=out)
