"""``loragate`` command line: serve, demo, adapters (admin API client and training)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.admin.commands import add_adapters_parser
from gateway.config import Settings

DEMO_MODEL_ID = "smollm2-135m-instruct"


def _serve(settings: Settings) -> None:
    import uvicorn

    from gateway.app import create_app

    logging.basicConfig(
        level=settings.server.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load(args.config)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"loragate: invalid configuration {args.config}:\n{exc}", file=sys.stderr)
        return 2
    server = settings.server.model_copy(update=_server_overrides(args))
    _serve(settings.model_copy(update={"server": server}))
    return 0


def demo_settings(cache_dir: Path | None, server: dict[str, Any]) -> Settings:
    from adapters.demo_kit import ensure_demo_kit

    kit = ensure_demo_kit(cache_dir)
    return Settings.load(
        None,
        model={"path": kit.base_dir, "name": DEMO_MODEL_ID},
        adapters=[{"name": name, "path": path} for name, path in sorted(kit.adapters.items())],
        engine={"max_model_len": 2048, "max_loras": 2, "memory_fraction": 0.2},
        # One registry per demo kit, wherever the demo is started from.
        registry={"data_dir": kit.base_dir.parent / f"registry-{kit.base_dir.name}"},
        server=server,
    )


SDK_EXAMPLE = """
loragate demo is starting on http://{host}:{port}/v1 (models: {models})

    from openai import OpenAI
    client = OpenAI(base_url="http://{host}:{port}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="pirate",  # or "robot", or "{base}" for the base model
        messages=[{{"role": "user", "content": "What is the capital of France?"}}],
        max_tokens=48,
    )
    print(reply.choices[0].message.content)
"""


def cmd_demo(args: argparse.Namespace) -> int:
    settings = demo_settings(args.cache_dir, _server_overrides(args))
    models = ", ".join([settings.model.served_name] + [a.name for a in settings.adapters])
    print(
        SDK_EXAMPLE.format(
            host=settings.server.host,
            port=settings.server.port,
            models=models,
            base=settings.model.served_name,
        ),
        flush=True,
    )
    _serve(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loragate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the models of a config file")
    serve.add_argument("--config", type=Path, required=True)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="build (once) and serve the demo model and adapters")
    demo.add_argument("--cache-dir", type=Path, default=None)
    demo.add_argument("--host")
    demo.add_argument("--port", type=int)
    demo.set_defaults(func=cmd_demo)

    add_adapters_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
