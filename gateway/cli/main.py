"""``loragate`` command line: serve, demo, adapters (admin API client and training),
rag (retrieval collections), compare (eval sets over variants), config, keys, tenants
and audit (admin API clients)."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import ValidationError

from gateway.cli.admin import add_adapters_parser
from gateway.cli.compare import add_compare_parser
from gateway.cli.rag import add_rag_parser
from gateway.cli.tenants import add_keys_parser, add_tenants_parser
from gateway.config_reload import ConfigOverrides, load_settings
from gateway.extras import ENGINE, RAG, RAG_TORCH, TRAINING, MissingExtraError, require
from gateway.logging_setup import configure_logging
from gateway.settings import ServerSettings, Settings, VLLMEngineSettings, config_error_lines
from gateway.tenancy.managed import EMPTY
from gateway.tenancy.merged_view import merged_lines, read_managed


def _serve(
    settings: Settings,
    config_path: Path | None = None,
    overrides: ConfigOverrides | None = None,
) -> None:
    import uvicorn

    from gateway.api.graceful_server import GracefulServer
    from gateway.app import create_app
    from gateway.pipeline.drain import Drain

    configure_logging(settings.server.log_level, settings.server.json_logs)
    drain = Drain(settings.server.drain_timeout)  # SIGTERM: drain, then exit 0
    app = create_app(settings, config_path=config_path, config_overrides=overrides, drain=drain)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=False,
    )
    GracefulServer(config, drain).run()


def _server_overrides(args: argparse.Namespace) -> dict[str, Any]:
    server: dict[str, Any] = {}
    if args.host is not None:
        server["host"] = args.host
    if args.port is not None:
        server["port"] = args.port
    return server


ENGINE_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    (
        "--dtype",
        "dtype",
        str,
        "model dtype; auto: bfloat16 on a GPU or a CPU with native bf16, else float32",
    ),
    ("--max-model-len", "max_model_len", int, "longest prompt + completion, in tokens"),
    ("--max-loras", "max_loras", int, "adapters in one batch (engine slots)"),
    ("--max-cpu-loras", "max_cpu_loras", int, "adapters kept in the engine's CPU cache"),
    ("--max-lora-rank", "max_lora_rank", int, "largest adapter rank served"),
    (
        "--gpu-memory-utilization",
        "memory_fraction",
        float,
        "share of GPU memory for the engine (on a CPU: of RAM for the KV cache)",
    ),
    ("--max-num-seqs", "max_num_seqs", int, "most sequences in one batch"),
    ("--seed", "seed", int, "engine random seed"),
)
"""``vllm serve``'s flags that loragate's ``engine`` settings take, by the same name."""


def _name_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key = key.replace("-", "_")  # vllm serve's spelling; one name, whichever is given
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key}: VALUE is not a YAML scalar") from None


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``loragate serve``'s flags as config sections (see ``config_reload.apply_overrides``)."""
    overrides: dict[str, Any] = {}
    model = {"path": args.model, "name": args.served_model_name}
    if any(v is not None for v in model.values()):
        overrides["model"] = {k: v for k, v in model.items() if v is not None}
    if args.lora:
        overrides["adapters"] = [{"name": n, "path": p} for n, p in args.lora]
    engine = {f: getattr(args, f) for _, f, _, _ in ENGINE_FLAGS if getattr(args, f) is not None}
    if args.enforce_eager:
        engine["enforce_eager"] = True
    if args.engine_arg:
        engine["extra_args"] = dict(args.engine_arg)
    if engine:
        overrides["engine"] = engine
    if server := _server_overrides(args):
        overrides["server"] = server
    return overrides


def print_config_errors(source: Path | str, exc: Exception) -> None:
    for line in config_error_lines(source, exc):
        print(line, file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.config is None and args.model is None:
        print("loragate serve: give --config FILE, --model DIR, or both", file=sys.stderr)
        return 2
    overrides = serve_overrides(args)
    try:
        settings = load_settings(args.config, overrides)
    except (ValidationError, ValueError, OSError) as exc:
        print("loragate: not starting, the configuration is invalid:", file=sys.stderr)
        print_config_errors(args.config or "command line", exc)
        return 2
    try:
        require_extras_of(settings)
    except MissingExtraError as exc:
        print(f"loragate: not starting: {exc}", file=sys.stderr)
        return 2
    _serve(settings, args.config, overrides)
    return 0


def require_extras_of(settings: Settings) -> None:
    """The extras this configuration starts with: the in-process engine's, and ``rag``
    (with ``rag-torch`` for a sentence-transformers embedder) when retrieval loads at
    start-up (else retrieval answers 503 naming it)."""
    from gateway.rag.provider import should_preload

    if settings.engine.kind == "vllm":
        require(ENGINE)
    if should_preload(settings):
        require(RAG)
        retrieval = settings.retrieval
        if retrieval.embedder == "minilm" or retrieval.embedder_dir is not None:
            require(RAG_TORCH)


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
    if args.file_only:
        return 0
    managed, where = read_managed(settings)
    print(f"Tenants served, with the admin API's from {where} (the config file wins):")
    for line in merged_lines(tenancy, managed if managed is not None else EMPTY):
        print(line)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the demo once (cached), print its keys and examples when ready, serve it."""
    try:
        for extra in (ENGINE, RAG, TRAINING):  # the engine, its collections, its kit
            require(extra)
    except MissingExtraError as exc:
        print(f"loragate demo: {exc}", file=sys.stderr)
        return 2
    from gateway.demo.runner import run_demo

    return run_demo(args.cache_dir, _server_overrides(args), _serve)


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    server = ServerSettings.model_fields
    parser.add_argument(
        "--host",
        help=f"address to bind (default: the config's server.host, else {server['host'].default})",
    )
    parser.add_argument(
        "--port",
        type=int,
        help=f"port to bind (default: the config's server.port, else {server['port'].default})",
    )


def _literal_choices(annotation: Any) -> tuple[Any, ...] | None:
    return get_args(annotation) if get_origin(annotation) is Literal else None


def _add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve a config file's models, or a model folder and adapters given as flags",
        description="Serve one base model and its LoRA adapters. With --config the file "
        "gives every setting; the flags below override it and LORAGATE_* variables. "
        "Without it, --model is enough: loragate serve --model DIR --lora NAME=PATH "
        "is vllm serve DIR --enable-lora --lora-modules NAME=PATH.",
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML config file (default: none; then --model is needed)",
    )
    serve.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="Hugging Face folder of the base model, as vllm serve DIR takes it "
        "(default: the config's model.path)",
    )
    serve.add_argument(
        "--served-model-name",
        metavar="NAME",
        help="id clients use for the base model (default: the config's model.name, else "
        "the folder's name)",
    )
    serve.add_argument(
        "--lora",
        "--lora-modules",
        type=_name_path,
        nargs="+",
        action="extend",
        metavar="NAME=PATH",
        help="adapters served from start-up (repeatable; replaces the config's adapter of "
        "the same name; default: the config's adapters only)",
    )
    serve.add_argument(
        "--engine-arg",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="any vLLM engine argument (engine.extra_args), VALUE read as YAML, e.g. "
        "--engine-arg enable_prefix_caching=true (repeatable; default: the config's)",
    )
    engine = VLLMEngineSettings.model_fields
    metavars = {int: "N", float: "FRACTION", str: None}
    for flag, field, kind, text in ENGINE_FLAGS:
        default = engine[field].default
        shown = "vLLM's default" if default is None else default
        serve.add_argument(
            flag,
            dest=field,
            type=kind,
            metavar=metavars[kind],
            choices=_literal_choices(engine[field].annotation),
            help=f"{text}: engine.{field} (default: the config's, else {shown})",
        )
    serve.add_argument(
        "--enforce-eager",
        action="store_true",
        help="no CUDA graphs / compilation: engine.enforce_eager (default: the config's, "
        f"else {engine['enforce_eager'].default})",
    )
    serve.add_argument(
        "--enable-lora",
        action="store_true",
        help="accepted for vllm serve's command lines; LoRA is always on",
    )
    _add_server_flags(serve)
    serve.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loragate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"loragate {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve_parser(sub)

    demo = sub.add_parser(
        "demo", help="build (once) and serve the demo: model, adapters, tenants, manuals"
    )
    demo.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the demo is built and cached (default: $LORAGATE_CACHE, else "
        "~/.cache/loragate)",
    )
    _add_server_flags(demo)
    demo.set_defaults(func=cmd_demo)

    add_adapters_parser(sub)
    add_rag_parser(sub)
    add_compare_parser(sub)

    config = sub.add_parser("config", help="configuration files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file", type=Path, help="the YAML config file to check")
    check.add_argument(
        "--file-only",
        action="store_true",
        help="check the file alone (default: also show the tenants with the admin API's "
        "from the gateway's store)",
    )
    check.set_defaults(func=cmd_config_check)

    add_keys_parser(sub)
    add_tenants_parser(sub)
    return parser


def package_version() -> str:
    try:
        return metadata.version("loragate")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
