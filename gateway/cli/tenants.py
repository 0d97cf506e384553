"""``loragate keys ...``, ``loragate tenants ...`` and ``loragate audit``: the admin
API's tenants, keys and audit log from the command line.

They call a running gateway (``--url``, default ``$LORAGATE_URL`` or
http://127.0.0.1:8000) with the admin key (``--admin-key``, default
``$LORAGATE_ADMIN_KEY``); lists print a table, the rest JSON (``--json``: JSON
everywhere). ``keys create --offline`` (and ``--admin``) makes a key without a gateway
and prints the hash entry for the config file instead. Exit status: 0 ok, 1 refused by
the gateway or unreachable, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from gateway.cli.admin import client_options
from gateway.cli.admin_client import AdminAPIError, AdminClient, default_admin_key, default_url
from gateway.settings.keys import generate_key

DURATION = re.compile(r"^(\d+)([smhdw])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UsageError(Exception):
    """Bad arguments (exit status 2)."""


def add_keys_parser(sub: Any) -> None:
    common = client_options()
    keys = sub.add_parser("keys", help="API keys of tenants (over the admin API)")
    cmds = keys.add_subparsers(dest="keys_command", required=True)
    create = cmds.add_parser(
        "create", parents=[common], help="make a key; its secret is printed once"
    )
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--tenant", help="the tenant the key is for")
    owner.add_argument(
        "--admin", action="store_true", help="an admin key for the config file (offline)"
    )
    create.add_argument("--name", help="a label for people (default: cli)")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", help="e.g. 30d, 12h, 90m (default: never)")
    expiry.add_argument("--expires-at", type=int, help="unix seconds (default: never)")
    create.add_argument(
        "--models", help="comma-separated models the key may call (default: the tenant's)"
    )
    create.add_argument(
        "--budget-period",
        choices=("day", "month"),
        help="the key's budget period (default: no budget)",
    )
    create.add_argument(
        "--budget-tokens", type=int, help="tokens per budget period (default: no token cap)"
    )
    create.add_argument(
        "--budget-cost", type=float, help="cost per budget period (default: no cost cap)"
    )
    create.add_argument(
        "--offline",
        action="store_true",
        help="no gateway: print the key and the hash entry for the config file",
    )
    listing = cmds.add_parser("list", parents=[common], help="a tenant's keys (no secrets)")
    listing.add_argument("--tenant", required=True, help="the tenant whose keys to list")
    revoke = cmds.add_parser("revoke", parents=[common], help="revoke a key (401 from now on)")
    revoke.add_argument("--tenant", required=True, help="the tenant the key belongs to")
    revoke.add_argument("id", help="the key id (lg-<id>-...)")
    keys.set_defaults(func=cmd_keys)


def add_tenants_parser(sub: Any) -> None:
    common = client_options()
    tenants = sub.add_parser("tenants", help="tenants (over the admin API)")
    cmds = tenants.add_subparsers(dest="tenants_command", required=True)
    cmds.add_parser("list", parents=[common], help="every tenant, and where it is defined")
    cmds.add_parser("show", parents=[common], help="one tenant's definition").add_argument(
        "name", help="the tenant"
    )
    for name, text in (
        ("create", "define a tenant (as under tenants.<name> in the config file)"),
        ("update", "change the fields given; the others stay"),
    ):
        cmd = cmds.add_parser(name, parents=[common], help=text)
        cmd.add_argument("name", help="the tenant")
        cmd.add_argument(
            "--file",
            type=Path,
            help="YAML or JSON file with the tenant's fields, no keys (default: none)",
        )
        cmd.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="one field, VALUE read as YAML, e.g. --set 'models=[tiny, pirate]' "
            "(repeatable; default: none)",
        )
    cmds.add_parser(
        "delete", parents=[common], help="delete an API tenant and revoke its keys"
    ).add_argument("name", help="the tenant")
    tenants.set_defaults(func=cmd_tenants)

    audit = sub.add_parser("audit", parents=[common], help="the admin API's audit log")
    audit.add_argument("--limit", type=int, default=50, help="entries (default: 50)")
    audit.add_argument(
        "--before", type=int, help="entries older than this seq (default: the newest)"
    )
    audit.set_defaults(func=cmd_audit)


# -- running ------------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "create" and (args.admin or args.offline):
        return keys_offline(args)
    return asyncio.run(run_tenant_command(args))


def cmd_tenants(args: argparse.Namespace) -> int:
    return asyncio.run(run_tenant_command(args))


def cmd_audit(args: argparse.Namespace) -> int:
    return asyncio.run(run_tenant_command(args))


async def run_tenant_command(
    args: argparse.Namespace,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one ``keys``/``tenants``/``audit`` command; ``transport`` lets tests talk to
    an in-process app."""
    out, err = out or sys.stdout, err or sys.stderr
    url, key = args.url or default_url(), args.admin_key or default_admin_key()
    try:
        request = _request(args)
        async with AdminClient(url, key, transport=transport) as client:
            method, path, options = request
            result = await client.request(method, path, **options)
    except UsageError as exc:
        print(f"loragate: {exc}", file=err)
        return 2
    except AdminAPIError as exc:
        print(f"loragate: {exc}", file=err)
        return 1
    print(_render(args, result), file=out)
    return 0


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """(method, path, httpx options) of the command."""
    if args.command == "audit":
        params = {"limit": args.limit, **({"before": args.before} if args.before else {})}
        return ("GET", "/admin/audit", {"params": params})
    if args.command == "keys":
        base = f"/admin/tenants/{args.tenant}/keys"
        if args.keys_command == "list":
            return ("GET", base, {})
        if args.keys_command == "revoke":
            return ("DELETE", f"{base}/{args.id}", {})
        return ("POST", base, {"json": key_body(args)})
    base = "/admin/tenants"
    command = args.tenants_command
    if command == "list":
        return ("GET", base, {})
    if command == "show":
        return ("GET", f"{base}/{args.name}", {})
    if command == "delete":
        return ("DELETE", f"{base}/{args.name}", {})
    fields = tenant_fields(args.file, args.set)
    if command == "create":
        return ("POST", base, {"json": {"name": args.name, **fields}})
    return ("PATCH", f"{base}/{args.name}", {"json": fields})


def key_body(args: argparse.Namespace, now: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": args.name or "cli"}
    if args.expires_in:
        match = DURATION.match(args.expires_in)
        if match is None:
            raise UsageError(f"--expires-in: expected e.g. 30d, 12h, 90m; got {args.expires_in!r}")
        seconds = int(match.group(1)) * SECONDS[match.group(2)]
        body["expires_at"] = int((time.time() if now is None else now) + seconds)
    elif args.expires_at is not None:
        body["expires_at"] = args.expires_at
    if args.models:
        body["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    limits = {"max_tokens": args.budget_tokens, "max_cost": args.budget_cost}
    if args.budget_period:
        body["budget"] = {"period": args.budget_period, **limits}
    elif any(v is not None for v in limits.values()):
        raise UsageError("--budget-tokens and --budget-cost need --budget-period")
    return body


def tenant_fields(file: Path | None, settings: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"--file {file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--file {file}: expected a mapping of tenant fields")
        fields.update(loaded)
    for item in settings:
        field, sep, raw = item.partition("=")
        if not sep or not field:
            raise UsageError(f"--set: expected FIELD=VALUE, got {item!r}")
        try:
            fields[field] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UsageError(f"--set {field}: VALUE is not YAML") from None
    return fields


# -- output -------------------------------------------------------------------------


def _render(args: argparse.Namespace, result: Any) -> str:
    if args.json:
        return json.dumps(result, indent=2)
    if args.command == "audit":
        return table(
            ["SEQ", "AT", "ACTOR", "ACTION", "TENANT", "TARGET"],
            [
                [e["seq"], _time(e["at"]), e["actor"], e["action"], e["tenant"], e["target"]]
                for e in result["data"]
            ],
        )
    if args.command == "keys" and args.keys_command == "list":
        return table(
            ["ID", "NAME", "CREATED", "EXPIRES", "LAST_USED", "BUDGET", "SPENT_TOKENS"],
            [
                [
                    k["id"],
                    k["name"],
                    _time(k["created_at"]),
                    _time(k["expires_at"]),
                    _time(k["last_used_at"]),
                    _budget(k["budget"]),
                    k["spent"]["tokens"],
                ]
                for k in result["data"]
            ],
        )
    if args.command == "keys" and args.keys_command == "create":
        return (
            f"New API key {result['id']} for tenant {args.tenant} (shown once, store it now):"
            f"\n\n    {result['key']}\n"
        )
    if args.command == "tenants" and args.tenants_command == "list":
        return table(
            ["NAME", "SOURCE", "MODELS", "WEIGHT", "MAX_IN_FLIGHT"],
            [
                [t["name"], t["source"], ",".join(t["models"]), t["weight"], t["max_in_flight"]]
                for t in result["data"]
            ],
        )
    return json.dumps(result, indent=2)


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _time(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _budget(budget: dict[str, Any] | None) -> str | None:
    if budget is None:
        return None
    caps = [f"{budget['max_tokens']} tok" if budget.get("max_tokens") is not None else ""]
    caps.append(f"{budget['max_cost']:g} cost" if budget.get("max_cost") is not None else "")
    return f"{'/'.join(c for c in caps if c) or 'none'} per {budget['period']}"


def keys_offline(args: argparse.Namespace) -> int:
    """Print a new key once, and the hash entry to put in the config file."""
    new = generate_key()
    owner = "admin" if args.admin else f"tenant {args.tenant}"
    entry = yaml.safe_dump([{"id": new.key_id, "hash": new.hash}], sort_keys=False).strip()
    where = "admin:\n  keys:" if args.admin else f"tenants:\n  {args.tenant}:\n    keys:"
    print(f"New API key for {owner} (shown once, store it now):\n\n    {new.key}\n")
    print(f"Add to the config file under\n{where}\n")
    print("\n".join("      " + line for line in entry.splitlines()))
    print("\nthen reload: kill -HUP <pid> or POST /admin/config/reload")
    return 0
