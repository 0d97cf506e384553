"""Pure gateway overhead: loragate (remote mode) and LiteLLM's proxy in front of the same
instant backend, side by side in one run. Prints a Markdown table.

    python -m loadtests.bench_overhead [--litellm-python .litellm-venv/bin/python]

For each target (the backend directly, loragate, LiteLLM) a cheap raw-asyncio client
(``loadtests.raw_load``, in this process) sends a short chat completion:

- concurrency 1, streamed and not, after 200 warm-up requests (fewer measured the
  first seconds after start-up, which swung runs by half): end-to-end latency
  p50/p99; *added* is the target's figure minus the backend's own (the direct row);
- concurrency 32, streamed: requests/s, and the CPU time the target's process tree
  spent in the timed window (``/proc`` user+system via psutil) per request.

loragate runs as ``loragate serve`` would (one uvicorn worker, ``engine.kind: remote``
pointed at the backend, a tenant with an API key, rate limits and a system-prompt
policy, metrics on). LiteLLM 1.110.2 runs its proxy with one worker, from its own
virtual environment (it pins packages loragate's venv must not get)::

    python3 -m venv .litellm-venv
    .litellm-venv/bin/pip install litellm==1.110.2 pyjwt semver fastapi-sso mcp \\
        soundfile backoff orjson apscheduler python-multipart redis expression \\
        'uvicorn[standard]'

Point ``--litellm-python`` (or ``LITELLM_PYTHON``) at its python; without one the
LiteLLM row is skipped with a note.

``--tracing`` adds loragate rows with OpenTelemetry traces on (docs/tracing.md),
configured by the ``OTEL_*`` variables, spans exported over OTLP/HTTP to a local
collector (rotel, the dev extra's, dropping what it receives): every request traced,
and one in ten (``parentbased_traceidratio``, 0.1); the row without tracing then runs
with every ``OTEL_*`` variable removed.

``--rounds N`` measures every target N times in turn (each round: every target's c=1
and c=32 runs) and pools the rounds' latencies and CPU time, so that a burst of load
from other programs falls on all targets alike: what a loaded shared machine needs for
a difference of a fraction of a millisecond to show.

The load average goes with the table: the servers and the client share the machine's
cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from loadtests.bench_serving import wait_ready
from loadtests.instant_backend import MODEL
from loadtests.raw_load import LoadResult, build_request, run_load
from loadtests.target import free_port

HOST = "127.0.0.1"
DEFAULT_LITELLM_PYTHON = ".litellm-venv/bin/python"
"""Where the module docstring's commands put LiteLLM's venv (beside the checkout)."""
LITELLM_KEY = "sk-bench-master-key"
POLICY = "You are the benchmark assistant of {tenant}. Answer briefly and cite nothing."


def chat_body(stream: bool, max_tokens: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None
    key: str | None = None
    note: str = ""
    results: dict[str, LoadResult] = field(default_factory=dict)
    cpu_ms_per_request: float | None = None
    cpu_seconds: float = 0.0
    """CPU time of the target's process tree in its c=32 windows, all rounds."""
    cpu_requests: int = 0

    def add(self, name: str, result: LoadResult) -> None:
        """Pool ``result`` with the earlier rounds' run of the same name."""
        pooled = self.results.get(name)
        if pooled is None:
            self.results[name] = result
            return
        pooled.latencies += result.latencies
        pooled.errors += result.errors
        pooled.first_error = pooled.first_error or result.first_error
        pooled.seconds += result.seconds


@contextmanager
def started(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every process below it, now."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def loragate_config(backend_port: int, port: int, model_dir: Path, work: Path) -> tuple[Path, str]:
    """A tenant with a key, limits and a policy; the engine: the instant backend."""
    from gateway.settings.keys import generate_key

    key = generate_key()
    config = {
        "model": {"path": str(model_dir), "name": MODEL},
        "engine": {"kind": "remote", "replicas": [f"http://{HOST}:{backend_port}"]},
        "server": {"host": HOST, "port": port, "log_level": "warning"},
        "registry": {"data_dir": str(work / f"data-{port}")},
        "tenants": {
            "bench": {
                "keys": [
                    {
                        "id": key.key_id,
                        "hash": key.hash,
                        "rate_limit": {"requests_per_minute": 10_000_000},
                    }
                ],
                "models": [MODEL],
                "rate_limit": {
                    "requests_per_minute": 10_000_000,
                    "tokens_per_minute": 1_000_000_000,
                },
                "policy": {
                    "system_prompt": POLICY,
                    "client_system": "merge",
                    "max_tokens": 256,
                    "temperature": {"max": 1.5},
                },
            }
        },
    }
    path = work / f"loragate-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, key.key


def litellm_config(backend_port: int, work: Path) -> Path:
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://{HOST}:{backend_port}/v1",
                    "api_key": "none",
                },
            }
        ],
        "general_settings": {"master_key": LITELLM_KEY},
    }
    path = work / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def measure(target: Target, args: argparse.Namespace) -> None:
    """Concurrency 1 (streamed, then not), then concurrency 32 with the CPU window."""
    for stream in (True, False):
        request = build_request(
            HOST, target.port, "/v1/chat/completions", chat_body(stream, args.tokens), target.key
        )
        target.add(f"c1-{'stream' if stream else 'json'}", asyncio.run(
            run_load(HOST, target.port, request, stream=stream, concurrency=1,
                     seconds=args.seconds, warmup=200)
        ))  # fmt: skip
    request = build_request(
        HOST, target.port, "/v1/chat/completions", chat_body(True, args.tokens), target.key
    )
    marks: list[float] = []
    pid = target.process.pid if target.process is not None else None
    window: Callable[[], None] | None = (
        (lambda: marks.append(tree_cpu_seconds(pid))) if pid is not None else None
    )
    result = asyncio.run(
        run_load(HOST, target.port, request, stream=True, concurrency=args.concurrency,
                 seconds=args.seconds * 2, warmup=3, window=window)
    )  # fmt: skip
    target.add("c32", result)
    if len(marks) == 2 and result.requests:
        target.cpu_seconds += marks[1] - marks[0]
        target.cpu_requests += result.requests
        target.cpu_ms_per_request = 1000 * target.cpu_seconds / target.cpu_requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency-1 run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=8, help="completion tokens per answer")
    parser.add_argument(
        "--litellm-python",
        default=os.environ.get("LITELLM_PYTHON", DEFAULT_LITELLM_PYTHON),
        help="python of a venv with litellm[proxy deps] ('' to skip LiteLLM)",
    )
    parser.add_argument(
        "--compare-tree",
        type=Path,
        action="append",
        help="also run loragate from this source tree (e.g. `git archive HEAD` unpacked): "
        "before/after figures from one run",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also run loragate with traces exported to a local collector (rotel)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every target this many times in turn, pooled (default 1)",
    )
    parser.add_argument("--model", type=Path, help="tokenizer folder (default: tests' tiny model)")
    parser.add_argument(
        "--only", choices=("loragate", "litellm"), action="append", help="besides the backend"
    )
    args = parser.parse_args()
    only = set(args.only or ("loragate", "litellm"))
    load_before = os.getloadavg()
    targets: list[Target] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-overhead-")))
        backend_port = free_port()
        backend_log = work / "backend.log"
        serve_backend = [sys.executable, "-m", "loadtests.instant_backend"]
        backend = stack.enter_context(
            started([*serve_backend, "--port", str(backend_port)], backend_log)
        )
        wait_ready(
            f"http://{HOST}:{backend_port}/health", backend, 300, interval=0.3, log=backend_log
        )
        targets.append(Target("backend directly", backend_port, backend))
        if "loragate" in only:
            untraced = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            runs = [("loragate (remote)", untraced if args.tracing else None)]
            if args.tracing:
                traced = _traced_env(stack, work)
                runs.append(("loragate (remote), tracing on", traced))
                one_in_ten = {
                    **traced,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0.1",
                }
                runs.append(("loragate (remote), tracing 1 in 10", one_in_ten))
            for name, env in runs:
                port = free_port()
                config, key = loragate_config(backend_port, port, args.model or _tiny_model(), work)
                log = work / f"loragate-{port}.log"
                cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
                proc = stack.enter_context(started(cmd, log, env))
                wait_ready(f"http://{HOST}:{port}/ready", proc, 300, interval=0.3, log=log)
                targets.append(Target(name, port, proc, key=key))
        for tree in args.compare_tree or ():
            port = free_port()
            config, key = loragate_config(backend_port, port, args.model or _tiny_model(), work)
            log = work / f"loragate-{port}.log"
            cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)]
            proc = stack.enter_context(started(cmd, log, cwd=tree))
            wait_ready(f"http://{HOST}:{port}/ready", proc, 300, interval=0.3, log=log)
            targets.append(Target(f"loragate @ {tree}", port, proc, key=key))
        if "litellm" in only:
            targets.append(_start_litellm(stack, args, backend_port, work))
        for r in range(args.rounds):
            for target in targets:
                if not target.note:
                    print(f"round {r + 1}: measuring {target.name} ...", file=sys.stderr)
                    measure(target, args)
    print_table(targets, args, load_before, os.getloadavg())
    failed = [t.name for t in targets for r in t.results.values() if r.errors or not r.requests]
    return 1 if failed else 0


def _traced_env(stack: ExitStack, work: Path) -> dict[str, str]:
    """A collector that drops what it gets, and the variables that send every trace there."""
    from tests.support.otel_collector import Collector, rotel_binary

    binary = rotel_binary()
    if binary is None:
        raise SystemExit("--tracing needs rotel (pip install rotel==0.0.1a15: the dev extra)")
    collector = Collector(binary, work / "rotel.log", free_port(), free_port(), debug_log=False)
    stack.callback(collector.stop)
    collector.wait_ready()
    return {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "loragate-bench",
        "OTEL_TRACES_SAMPLER": "always_on",
    }


def _tiny_model() -> Path:
    from tests.support.modelkit import tiny_llama_dir  # the tests' tokenizer + config folder

    return tiny_llama_dir()


def _start_litellm(
    stack: ExitStack, args: argparse.Namespace, backend_port: int, work: Path
) -> Target:
    python = args.litellm_python
    if not python or not Path(python).exists():
        how = "create it as this module's docstring says and pass --litellm-python"
        return Target(
            "LiteLLM proxy", 0, None, note=f"skipped: no LiteLLM venv at {python!r} ({how})"
        )
    port = free_port()
    log = work / "litellm.log"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    version = subprocess.run(
        [python, "-c", "from importlib.metadata import version; print(version('litellm'))"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    config = litellm_config(backend_port, work)
    cmd = [
        python, "-m", "litellm.proxy.proxy_cli", "--config", str(config),
        "--host", HOST, "--port", str(port), "--num_workers", "1",
    ]  # fmt: skip
    proc = stack.enter_context(started(cmd, log, env))
    try:
        wait_ready(f"http://{HOST}:{port}/health/liveliness", proc, 300, interval=0.3, log=log)
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1]
        return Target(f"LiteLLM {version} proxy", 0, None, note=f"did not start: {last}")
    return Target(f"LiteLLM {version} proxy", port, proc, key=LITELLM_KEY)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(
    targets: list[Target],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    direct = targets[0].results
    print(
        f"\nChat completion, {args.tokens} tokens, instant backend; c=1 runs "
        f"{args.seconds:g}s each, c={args.concurrency} streamed {2 * args.seconds:g}s, "
        f"{args.rounds} round(s) in turn, pooled. "
        f"Load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        f"({os.cpu_count()} CPUs).\n"
    )
    print(
        "| target | c=1 stream p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| c=1 JSON p50 ms | added p50 ms "
        f"| c={args.concurrency} req/s | CPU-ms/request | errors |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in targets:
        if t.note:
            print(f"| {t.name} | {t.note} |||||||||")
            continue
        s, j, c = t.results["c1-stream"], t.results["c1-json"], t.results["c32"]
        is_direct = t is targets[0]
        added = (
            (None, None, None)
            if is_direct
            else (
                s.p50 - direct["c1-stream"].p50,
                s.percentile(0.99) - direct["c1-stream"].percentile(0.99),
                j.p50 - direct["c1-json"].p50,
            )
        )
        errors = sum(r.errors for r in t.results.values())
        print(
            f"| {t.name} | {_fmt(s.p50, 2)} | {_fmt(s.percentile(0.99), 2)} "
            f"| {_fmt(added[0], 2)} | {_fmt(added[1], 2)} | {_fmt(j.p50, 2)} | {_fmt(added[2], 2)} "
            f"| {_fmt(c.rps, 0)} | {_fmt(t.cpu_ms_per_request, 2)} | {errors} |"
        )
    measured = [t for t in targets[1:] if not t.note]
    base_p50 = direct["c1-stream"].p50
    for a, b in ((measured[0], other) for other in measured[1:]):
        ratio = (b.results["c1-stream"].p50 - base_p50) / max(
            1e-9, a.results["c1-stream"].p50 - base_p50
        )
        rps = a.results["c32"].rps / max(1e-9, b.results["c32"].rps)
        cpu = (b.cpu_ms_per_request or 0) / max(1e-9, a.cpu_ms_per_request or 0)
        stream_ms = b.results["c1-stream"].p50 - a.results["c1-stream"].p50
        json_ms = b.results["c1-json"].p50 - a.results["c1-json"].p50
        print(
            f"\n{b.name} / {a.name}: added p50 x{ratio:.1f}, CPU-ms per request x{cpu:.1f}; "
            f"{a.name} serves x{rps:.1f} the requests/s at c={args.concurrency}; "
            f"p50 {stream_ms:+.2f} ms streamed, {json_ms:+.2f} ms JSON."
        )
    for t in targets:
        for name, r in t.results.items():
            if r.first_error:
                print(f"\n{t.name} {name}: {r.errors} errors, first: {r.first_error}")


if __name__ == "__main__":
    sys.exit(main())
