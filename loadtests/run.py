"""Run a scenario headless at several user counts, then write the report.

Against a server it starts (``--start demo``: ``loragate demo``; or ``--server-cmd``
for any OpenAI-compatible server, e.g. vLLM's own) or one already running (``--url``)::

    python -m loadtests.run --start demo --users 1,4,8 --run-time 30s
    python -m loadtests.run --url http://127.0.0.1:8000 --users 2 --run-time 10s
    python -m loadtests.run --server-cmd "python -m vllm.entrypoints.openai.api_server \\
        --model DIR --port {port}" --ready-path /health --users 1,4
    python -m loadtests.run --start paced --scenario loadtests/scenarios/noisy-neighbour.yaml

``--start paced`` runs a real gateway in front of a paced fake replica (the scenario's
``paced:`` section; ``loadtests.paced_target``); a scenario whose tenants have their
own ``users`` runs once with their sum. Every run also writes ``reliability.md`` and
its plots (per-tenant latency over time, refusals; ``loadtests.report_reliability``).

Each step is one Locust process (``u<users>_*.csv``, ``u<users>.html``, ``.log`` in
``--out``), bounded by its run time plus a grace period; targets are loopback only.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from loadtests.paced_target import export_keys, paced_gateway
from loadtests.report import step_prefix, write_report
from loadtests.report_reliability import write_reliability_report
from loadtests.scenario import Scenario, load_scenario
from loadtests.stat_names import FAILURES_SUFFIX, SUMMARY_SUFFIX
from loadtests.target import (
    ServerProcess,
    TargetError,
    free_port,
    require_loopback,
    served_models,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "demo.yaml"
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
MAX_STEPS = 16
MAX_USERS = 1024
# Locust's own start-up and CSV writing, on top of run time and stop timeout.
STEP_GRACE_S = 90


def parse_duration(text: str) -> int:
    """Seconds in a Locust run time ("30s", "2m", "1h30m", "45"); at least 1."""
    match = DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 2m, 1h30m)")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < 1:
        raise argparse.ArgumentTypeError("run time must be at least 1 s")
    return total


def run_time_arg(text: str) -> str:
    parse_duration(text)
    return text.strip()


def parse_users(text: str) -> list[int]:
    """User counts "1,4,8": positive, distinct, at most MAX_STEPS of them."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of user counts: {text!r}") from None
    if not counts or len(counts) > MAX_STEPS or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"give 1 to {MAX_STEPS} distinct user counts")
    if any(not 1 <= c <= MAX_USERS for c in counts):
        raise argparse.ArgumentTypeError(f"user counts must be within 1..{MAX_USERS}")
    return counts


def locust_command(
    *,
    scenario: Path,
    url: str,
    users: int,
    spawn_rate: float,
    run_time: str,
    stop_timeout: int,
    prefix: Path,
) -> list[str]:
    return [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless", "--only-summary",
        "--users", str(users),
        "--spawn-rate", str(spawn_rate),
        "--run-time", run_time,
        "--stop-timeout", str(stop_timeout),
        "--host", url,
        "--scenario", str(scenario),
        "--csv", str(prefix),
        "--html", f"{prefix}.html",
        "--loglevel", "WARNING",
    ]  # fmt: skip


def run_step(args: argparse.Namespace, url: str, users: int) -> Path:
    """One Locust run; returns its stats CSV. Failed requests do not fail the step."""
    prefix = args.out / step_prefix(users)
    command = locust_command(
        scenario=args.scenario,
        url=url,
        users=users,
        spawn_rate=args.spawn_rate or users,
        run_time=args.run_time,
        stop_timeout=args.stop_timeout,
        prefix=prefix,
    )
    paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    limit = parse_duration(args.run_time) + args.stop_timeout + STEP_GRACE_S
    for suffix in (SUMMARY_SUFFIX, FAILURES_SUFFIX):  # never report an earlier run's step
        Path(f"{prefix}{suffix}").unlink(missing_ok=True)
    print(f"loadtests: {users} user(s) for {args.run_time} against {url}", flush=True)
    with open(f"{prefix}.log", "wb") as log:
        # Locust exits 1 when some requests failed: the report shows them.
        code = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, timeout=limit
        ).returncode
    stats = Path(f"{prefix}{SUMMARY_SUFFIX}")
    if code not in (0, 1) or not stats.exists():
        raise RuntimeError(f"locust failed (exit {code}); see {prefix}.log")
    return stats


def server_target(
    args: argparse.Namespace, scenario: Scenario
) -> tuple[str, AbstractContextManager[str]]:
    """A label for the report, and a context yielding the base URL (of ``--url``, or of a
    server started here and stopped on exit)."""
    if args.url:
        url = require_loopback(args.url)
        return url, nullcontext(url)
    if args.start == "paced":
        model_dir = args.model_dir or demo_base_dir()
        context = paced_gateway(scenario, args.paced_keys, model_dir, args.out, args.ready_timeout)
        return "loragate serve (remote mode) in front of a paced fake replica", context
    if args.start == "demo":
        loragate = Path(sys.executable).with_name("loragate")
        command = [str(loragate), "demo", "--host", "127.0.0.1", "--port", "{port}"]
        ready_path = args.ready_path or "/ready"
    else:
        command = shlex.split(args.server_cmd)
        ready_path = args.ready_path or "/v1/models"
    server = ServerProcess(
        command,
        port=args.port or free_port(),
        ready_path=ready_path,
        log_path=args.out / "server.log",
        ready_timeout_s=args.ready_timeout,
    )
    label = "loragate demo" if args.start == "demo" else shlex.join(server.command)
    return label, server


def warn_unserved_models(url: str, scenario: Scenario) -> None:
    """Say early when the scenario names models the server does not list."""
    key = scenario.tenants[0].api_key
    served = served_models(url, key.get_secret_value() if key else None)
    missing = sorted(set(scenario.models.names) - served) if served is not None else []
    if missing:
        print(
            f"loadtests: warning: {url} does not list {missing} (it serves {sorted(served or [])});"
            " requests for them will fail",
            file=sys.stderr,
        )


def demo_base_dir() -> Path:
    """The demo kit's base model folder (built on first use): the paced gateway's
    tokenizer and base model spec."""
    from adapters.tooling.demo_kit import default_cache_dir, ensure_demo_kit

    return Path(ensure_demo_kit(default_cache_dir()).base_dir)


DEMO_KEY_ENV = {"acme": "LORAGATE_DEMO_ACME_KEY", "globex": "LORAGATE_DEMO_GLOBEX_KEY"}


def export_demo_keys() -> None:
    """The demo's tenant keys (made on its first run, kept in its cache) into the
    environment variables the demo scenario names (``api_key_env``); inherited by the
    Locust processes."""
    from adapters.tooling.demo_kit import default_cache_dir
    from gateway.demo.keys import load_or_create_keys

    keys = load_or_create_keys(default_cache_dir())
    for role, var in DEMO_KEY_ENV.items():
        os.environ.setdefault(var, keys.key(role))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running OpenAI-compatible server (loopback)")
    target.add_argument(
        "--start",
        choices=["demo", "paced"],
        help="start `loragate demo`, or a gateway in front of a paced fake replica",
    )
    target.add_argument("--server-cmd", help="start this server command ({port} is replaced)")
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    parser.add_argument("--users", type=parse_users, default=[1, 4, 8], help="e.g. 1,4,8")
    parser.add_argument(
        "--run-time", type=run_time_arg, default="30s", help="per user count, e.g. 30s, 2m"
    )
    parser.add_argument(
        "--spawn-rate", type=float, default=None, help="users/s (default: all at once)"
    )
    parser.add_argument(
        "--stop-timeout", type=int, default=30, help="s for in-flight requests to end"
    )
    parser.add_argument("--out", type=Path, default=Path("loadtest-results"))
    parser.add_argument(
        "--port", type=int, default=None, help="port of a started server (default: free)"
    )
    parser.add_argument("--ready-path", default=None, help="readiness path of a started server")
    parser.add_argument("--ready-timeout", type=float, default=1800, help="s to wait for readiness")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="--start paced: base model folder"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.server_cmd and "{port}" not in args.server_cmd and args.port is None:
        parser.error("--server-cmd without {port} needs --port")
    if args.start == "demo":
        export_demo_keys()
    args.paced_keys = {}
    if args.start == "paced":
        try:
            args.paced_keys = export_keys(args.scenario)
        except (ValueError, OSError) as exc:
            parser.error(f"invalid scenario {args.scenario}: {exc}")
    try:
        scenario = load_scenario(args.scenario)  # fail here, not in every step
    except (ValueError, OSError) as exc:
        parser.error(f"invalid scenario {args.scenario}: {exc}")
    if scenario.pinned_users is not None:
        args.users = [scenario.pinned_users]
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        label, target = server_target(args, scenario)
        with target as url:
            warn_unserved_models(url, scenario)
            for users in args.users:
                run_step(args, url, users)
    except (TargetError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"loadtests: {exc}", file=sys.stderr)
        return 1
    title = args.title or f"scenario {scenario.name!r} against {label if args.start else url}"
    notes = [
        f"scenario `{args.scenario}` (seed {scenario.seed}), {args.run_time} per user count",
        f"server: `{label}`" + ("" if args.url else f" on {url}, started by the runner"),
    ]
    report = write_report(args.out, title, notes, users=args.users)
    print(report.read_text(encoding="utf-8"))
    reliability = write_reliability_report(args.out, scenario, title, users=args.users)
    if reliability is not None:
        print(reliability.read_text(encoding="utf-8"))
    print(f"loadtests: report, plots, Locust CSV and HTML in {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
