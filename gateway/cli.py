"""``loragate`` command line: serve, demo, adapters (admin API client and training),
rag (retrieval collections), config, keys."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.admin.commands import add_adapters_parser
from gateway.config import ServerSettings, Settings
from gateway.config_reload import describe
from gateway.logging_setup import configure_logging
from gateway.rag.commands import add_rag_parser
from gateway.tenancy.keys import generate_key


def _serve(settings: Settings, config_path: Path | None = None) -> None:
    import uvicorn

    from gateway.app import create_app

    configure_logging(settings.server.log_level, settings.server.json_logs)
    uvicorn.run(
        create_app(settings, config_path=config_path),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
    )


def _server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    return server


def with_server_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """``settings`` with the command line's ``--host``/``--port``, validated again: the
    server section as a whole, then "no keys means loopback only" on the address that
    will actually be bound, not the file's. (``model_copy(update=...)`` alone validates
    nothing; validating all of ``Settings`` again would let ``LORAGATE_SERVER__*``
    override the command line.)"""
    if not overrides:
        return settings
    server = ServerSettings.model_validate({**settings.server.model_dump(), **overrides})
    server.check_open_access(settings.tenancy())
    return settings.model_copy(update={"server": server})


def print_config_errors(path: Path, exc: Exception) -> None:
    """Each error with the path to its field, or a YAML line and column; never a value
    from the file (pydantic's own text quotes them, and a secret may be one)."""
    if isinstance(exc, ValidationError):
        print(f"{path}: {exc.error_count()} error(s)", file=sys.stderr)
        for line in describe(exc).split("; "):
            print(f"  {line}", file=sys.stderr)
    else:
        print(f"{path}: {exc}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = with_server_overrides(Settings.load(args.config), _server_overrides(args))
    except (ValidationError, ValueError, OSError) as exc:
        print("loragate: not starting, the configuration is invalid:", file=sys.stderr)
        print_config_errors(args.config, exc)
        return 2
    _serve(settings, args.config)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate a config file; print each error with the path to the bad field."""
    try:
        settings = Settings.load(args.file)
    except (ValidationError, ValueError, OSError) as exc:
        print_config_errors(args.file, exc)
        return 1
    tenancy = settings.tenancy()
    keys = sum(len(t.keys) for t in tenancy.tenants.values()) + len(tenancy.admin.keys)
    print(
        f"{args.file}: OK (model {settings.model.served_name}, {len(settings.adapters)} "
        f"adapter(s), {len(tenancy.tenants)} tenant(s), {keys} key(s), "
        f"{len(tenancy.prompts)} library prompt(s))"
    )
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
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


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the demo once (cached), print its keys and examples when ready, serve it."""
    from gateway.demo.runner import run_demo

    return run_demo(args.cache_dir, _server_overrides(args), _serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loragate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the models of a config file")
    serve.add_argument("--config", type=Path, required=True)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo", help="build (once) and serve the demo: model, adapters, tenants, manuals"
    )
    demo.add_argument("--cache-dir", type=Path, default=None)
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    demo.set_defaults(func=cmd_demo)

    add_adapters_parser(sub)
    add_rag_parser(sub)

    config = sub.add_parser("config", help="configuration files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key; print it once and its hash")
    owner = create.add_mutually_exclusive_group(required=True)
    owner.add_argument("--tenant")
    owner.add_argument("--admin", action="store_true")
    create.set_defaults(func=cmd_keys_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
