"""``loragate adapters ...``: the admin API from the command line, and LoRA training.

Every subcommand but ``train`` calls a running gateway (``--url``, default
``$LORAGATE_URL`` or http://127.0.0.1:8000) with the admin key (``--admin-key``,
default ``$LORAGATE_ADMIN_KEY``). Output is a table for ``list`` and JSON otherwise
(``--json`` gives JSON everywhere). Exit status: 0 ok, 1 refused by the gateway or
unreachable, 2 bad arguments or training input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import httpx

from gateway.cli.admin_client import (
    AdminAPIError,
    AdminClient,
    default_admin_key,
    default_url,
    packed_folder,
)
from gateway.cli.promote import add_promote_parser, cmd_promote
from gateway.extras import TRAINING, MissingExtraError, require

LIST_COLUMNS = (
    ("NAME", "name"),
    ("VERSION", "version"),
    ("STATUS", "status"),
    ("PINNED", "pinned"),
    ("RESIDENCY", "residency"),
    ("IN_FLIGHT", "in_flight"),
    ("REQUESTS", "requests_total"),
    ("LORA_ID", "lora_id"),
    ("SOURCE", "source"),
)


def _activate_flag(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--activate",
        dest="activate",
        action="store_true",
        default=None,
        help="serve the new version at once (default: only when NAME has no active version)",
    )
    group.add_argument(
        "--no-activate", dest="activate", action="store_false", help="register it inactive"
    )


def client_options() -> argparse.ArgumentParser:
    """The options every admin-API command takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=None,
        help="gateway URL (default: $LORAGATE_URL, else http://127.0.0.1:8000)",
    )
    common.add_argument(
        "--admin-key",
        default=None,
        help="admin key (default: $LORAGATE_ADMIN_KEY, else $LORAGATE_ADMIN__API_KEY)",
    )
    common.add_argument("--json", action="store_true", help="print raw JSON")
    return common


def add_adapters_parser(sub: Any) -> None:
    """Add ``adapters`` and its subcommands to the top-level ``loragate`` parser."""
    common = client_options()
    adapters = sub.add_parser("adapters", help="manage the adapters of a running gateway")
    cmds = adapters.add_subparsers(dest="adapters_command", required=True)
    cmds.add_parser("list", parents=[common], help="every adapter with residency and counts")
    cmds.add_parser("show", parents=[common], help="one adapter and its versions").add_argument(
        "name", help="adapter name"
    )

    register = cmds.add_parser("register", parents=[common], help="register a new version")
    register.add_argument("name", help="adapter name (clients call it as model)")
    source = register.add_mutually_exclusive_group(required=True)
    source.add_argument("--path", help="adapter folder on the gateway's machine")
    source.add_argument("--uri", help="fsspec URI (s3://..., memory://...)")
    source.add_argument("--file", type=Path, help="local .zip / .tar.gz archive to upload")
    source.add_argument("--upload-dir", type=Path, help="local adapter folder to upload")
    register.add_argument("--version", help="version label (default: the next free v<n>)")
    _activate_flag(register)

    activate = cmds.add_parser("activate", parents=[common], help="serve a version for NAME")
    activate.add_argument("name", help="adapter name")
    activate.add_argument("version", help="the version to serve as NAME")
    split = cmds.add_parser(
        "split",
        parents=[common],
        help="split NAME's traffic between versions (sticky per user or key)",
    )
    split.add_argument("name", help="adapter name")
    split.add_argument(
        "weights",
        nargs="*",
        type=_weight_pair,
        metavar="VERSION=WEIGHT",
        help="integer weights summing to 100, e.g. v3=90 v4=10",
    )
    split.add_argument("--clear", action="store_true", help="end the split")
    split.add_argument(
        "--shadow",
        type=_weight_pair,
        metavar="VERSION=PERCENT",
        help="also send PERCENT of the requests to VERSION (the caller never sees it); "
        "default: no shadow",
    )
    split.add_argument(
        "--rollback",
        action="append",
        type=_rollback_pair,
        metavar="BOUND=VALUE",
        help="end the split by itself past a bound: max_error_rate=0.05, "
        "max_latency_ratio=1.5, min_requests=50 (repeat the flag); default: no rollback",
    )
    shadow = cmds.add_parser(
        "shadow", parents=[common], help="both answers of NAME's shadowed requests (paged)"
    )
    shadow.add_argument("name", help="adapter name")
    shadow.add_argument("--tenant", help="one tenant's entries only (default: all)")
    shadow.add_argument(
        "--after", type=int, default=0, help="entries with ids above this (default: 0)"
    )
    shadow.add_argument(
        "--limit", type=int, default=20, help="entries per page, 1-100 (default: 20)"
    )
    add_promote_parser(cmds, common)
    for name, text in (
        ("retire", "stop serving (one version, or all); unloaded after its last request"),
        ("pin", "keep a version loaded in the engine"),
        ("unpin", "let the engine evict a version again"),
        ("prewarm", "load a version into the engine now"),
    ):
        cmd = cmds.add_parser(name, parents=[common], help=text)
        cmd.add_argument("name", help="adapter name")
        cmd.add_argument("--version", help="default: the active version (retire: all)")

    train = cmds.add_parser("train", parents=[common], help="train a LoRA adapter with peft")
    train.add_argument("--base", type=Path, required=True, help="base model folder")
    train.add_argument("--data", type=Path, required=True, help="chat dataset (.jsonl)")
    train.add_argument("--out", type=Path, required=True, help="new adapter folder")
    train.add_argument("--steps", type=int, default=60, help="optimizer steps (default: 60)")
    train.add_argument("--rank", type=int, default=8, help="LoRA rank r (default: 8)")
    train.add_argument("--alpha", type=int, default=16, help="LoRA alpha (default: 16)")
    train.add_argument(
        "--learning-rate", type=float, default=1e-3, help="learning rate (default: 0.001)"
    )
    train.add_argument("--batch-size", type=int, default=2, help="examples per step (default: 2)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument(
        "--eval-fraction",
        type=float,
        default=0.1,
        help="share of the examples held out for evaluation (default: 0.1)",
    )
    train.add_argument(
        "--register",
        metavar="NAME",
        help="upload it to the gateway as NAME (default: only write it to --out)",
    )
    _activate_flag(train)
    adapters.set_defaults(func=cmd_adapters)


def cmd_adapters(args: argparse.Namespace) -> int:
    if args.adapters_command == "train":
        return cmd_train(args)
    if args.adapters_command == "promote":
        return cmd_promote(args)
    return asyncio.run(run_admin_command(args))


async def run_admin_command(
    args: argparse.Namespace,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one admin subcommand; ``transport`` lets tests talk to an in-process app."""
    out, err = out or sys.stdout, err or sys.stderr
    url, key = args.url or default_url(), args.admin_key or default_admin_key()
    try:
        async with AdminClient(url, key, transport=transport) as client:
            result = await _call(client, args)
    except AdminAPIError as exc:
        print(f"loragate: {exc}", file=err)
        return 1
    if args.adapters_command == "list" and not args.json:
        print(format_table(result), file=out)
    else:
        print(json.dumps(result, indent=2), file=out)
    return 0


async def _call(client: AdminClient, args: argparse.Namespace) -> Any:
    command = args.adapters_command
    if command == "list":
        return await client.list()
    if command == "show":
        return await client.show(args.name)
    if command == "register":
        return await register(client, args.name, args)
    if command == "activate":
        return await client.activate(args.name, args.version)
    if command == "retire":
        return await client.retire(args.name, args.version)
    if command == "split":
        return await _split(client, args)
    if command == "shadow":
        return await client.shadow_log(
            args.name, tenant=args.tenant, after=args.after, limit=args.limit
        )
    method = {"pin": client.pin, "unpin": client.unpin, "prewarm": client.prewarm}[command]
    return await method(args.name, args.version)


def _weight_pair(text: str) -> tuple[str, int]:
    version, sep, weight = text.partition("=")
    if not sep or not version or not weight.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not VERSION=WEIGHT (e.g. v3=90)")
    return version, int(weight)


def _rollback_pair(text: str) -> tuple[str, float]:
    bound, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or bound not in ROLLBACK_BOUNDS or number is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not BOUND=VALUE with BOUND one of {', '.join(ROLLBACK_BOUNDS)}"
        )
    return bound, number


ROLLBACK_BOUNDS = ("max_error_rate", "max_latency_ratio", "min_requests")


async def _split(client: AdminClient, args: argparse.Namespace) -> Any:
    if args.clear == bool(args.weights):
        raise AdminAPIError(0, "give either VERSION=WEIGHT pairs or --clear")
    if args.clear:
        return await client.clear_split(args.name)
    weights = dict(args.weights)
    if len(weights) != len(args.weights):
        raise AdminAPIError(0, "each version may be named once")
    shadow = {"version": args.shadow[0], "percent": args.shadow[1]} if args.shadow else None
    rollback: dict[str, float] | None = dict(args.rollback) if args.rollback else None
    if rollback and "min_requests" in rollback:
        rollback["min_requests"] = int(rollback["min_requests"])
    return await client.split(args.name, weights, shadow=shadow, rollback=rollback)


async def register(client: AdminClient, name: str, args: argparse.Namespace) -> Any:
    options = {"version": getattr(args, "version", None), "activate": args.activate}
    if getattr(args, "path", None) or getattr(args, "uri", None):
        return await client.register(name, path=args.path, uri=args.uri, **options)
    if getattr(args, "file", None):
        return await client.upload(name, args.file, **options)
    folder = args.upload_dir if getattr(args, "upload_dir", None) else args.out
    with packed_folder(folder) as archive:
        return await client.upload(name, archive, **options)


def format_table(listing: dict[str, Any]) -> str:
    rows = [[h for h, _ in LIST_COLUMNS]]
    for adapter in listing.get("data", []):
        for version in adapter["versions"]:
            row = {"name": adapter["name"], **version}
            rows.append([_cell(row[key]) for _, key in LIST_COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(LIST_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not listing.get("slots_known", True):
        lines.append("(the engine does not report its slot table: no version shows gpu_slot)")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "-"
    return str(value)


def cmd_train(
    args: argparse.Namespace, *, transport: httpx.AsyncBaseTransport | None = None
) -> int:
    try:
        require(TRAINING)  # torch, transformers, peft
    except MissingExtraError as exc:
        print(f"loragate: {exc}", file=sys.stderr)
        return 2
    from adapters.tooling.dataset import DatasetError
    from adapters.tooling.training import TrainingError, train_lora

    try:
        result = train_lora(
            args.base,
            args.data,
            args.out,
            rank=args.rank,
            alpha=args.alpha,
            steps=args.steps,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            seed=args.seed,
            eval_fraction=args.eval_fraction,
        )
    except (DatasetError, TrainingError, FileExistsError, OSError) as exc:
        print(f"loragate: training failed: {exc}", file=sys.stderr)
        return 2
    eval_loss = "n/a" if result.eval_loss is None else f"{result.eval_loss:.4f}"
    print(
        f"trained {result.adapter_dir}: {result.steps} steps in {result.duration_s:.0f} s, "
        f"train loss {result.final_train_loss:.4f}, eval loss {eval_loss} "
        f"({result.num_train} train / {result.num_eval} eval examples)"
    )
    if not args.register:
        return 0
    return asyncio.run(_register_trained(args, transport))


async def _register_trained(
    args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None
) -> int:
    url, key = args.url or default_url(), args.admin_key or default_admin_key()
    try:
        async with AdminClient(url, key, transport=transport) as client:
            entry = await register(client, args.register, args)
    except AdminAPIError as exc:
        print(f"loragate: the adapter was trained but not registered: {exc}", file=sys.stderr)
        return 1
    print(f"registered {entry['ref']} ({entry['status']})")
    return 0
