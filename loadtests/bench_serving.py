"""Gateway vs vLLM's own OpenAI server: same model, same engine settings, same load.

Runs vLLM's benchmark client (``vllm.benchmarks.serve``) against
``python -m vllm.entrypoints.openai.api_server`` and against ``loragate serve``, both
started here on loopback and both kept up for the whole run, alternating the two for
several rounds so machine noise hits both alike. Prints a table of output throughput
and median TTFT per round and the gateway/vLLM ratios (targets: throughput >= 0.95x,
median TTFT <= 1.10x).

    python -m loadtests.bench_serving [--rounds 3] [--num-prompts 64] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.engine.dtype import choose_dtype
from loadtests.target import free_port

MODEL_ID = "smollm2-135m-instruct"
ENGINE = {"max_model_len": 2048, "max_loras": 2, "max_lora_rank": 8, "kv_cache_gib": 2}


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    timeout: float = 300,
    *,
    interval: float = 1.0,
    log: Path | None = None,
) -> None:
    """Until ``url`` answers 200 (loopback: no proxy from the environment); a process
    that exits first, or the timeout, raises with the tail of ``log`` when given."""
    tail = (lambda: "\n" + log.read_text(errors="replace")[-2000:]) if log else (lambda: "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {url}{tail()}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"server not ready after {timeout:.0f} s: {url}{tail()}")


def own_cores(index: int, of: int = 2) -> dict[str, str]:
    """The environment that binds engine ``index`` (of ``of`` running at once) to its own
    share of the cores. vLLM's automatic binding would pin every engine's worker to the
    same core; two engines up at once must not share one."""
    cores = os.cpu_count() or 1
    if cores < of:
        return dict(os.environ)
    share = cores // of
    first = index * share
    bind = str(first) if share == 1 else f"{first}-{first + share - 1}"
    return {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": bind}


def start_vllm(
    base: Path, adapters: dict[str, Path], port: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(base), "--served-model-name", MODEL_ID,
        "--host", "127.0.0.1", "--port", str(port), "--dtype", choose_dtype("auto").dtype,
        "--max-model-len", str(ENGINE["max_model_len"]),
        "--enable-lora", "--max-loras", str(ENGINE["max_loras"]),
        "--max-lora-rank", str(ENGINE["max_lora_rank"]),
        "--kv-cache-memory-bytes", str(int(ENGINE["kv_cache_gib"] * 1024**3)),
        "--disable-uvicorn-access-log", "--seed", "0",
        "--lora-modules", *[f"{name}={path}" for name, path in adapters.items()],
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def start_gateway(
    base: Path,
    adapters: dict[str, Path],
    port: int,
    workdir: Path,
    log: Path,
    *,
    metrics: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "model": {"path": str(base), "name": MODEL_ID},
        "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()],
        "engine": ENGINE,
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "registry": {"data_dir": str(workdir / "data")},
        "metrics": {"enabled": metrics},
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)]
    return subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def run_client(
    base_url: str, model: str, tokenizer: Path, args: argparse.Namespace, out_dir: Path, tag: str
) -> dict[str, Any]:
    """vLLM's own benchmark client, in a subprocess (it owns its event loop and stdout)."""
    result_file = f"{tag}.json"
    cmd = [
        sys.executable, "-c",
        "import sys; from vllm.benchmarks.serve import add_cli_args, main;"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser as P;"
        "p = P(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))",
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
        "--base-url", base_url, "--model", model, "--tokenizer", str(tokenizer),
        "--dataset-name", "random", "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len), "--num-prompts", str(args.num_prompts),
        "--max-concurrency", str(args.concurrency), "--ignore-eos", "--seed", "0",
        "--num-warmups", "2", "--save-result", "--result-dir", str(out_dir),
        "--result-filename", result_file, "--percentile-metrics", "ttft,tpot,e2el",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    result: dict[str, Any] = json.loads((out_dir / result_file).read_text())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--models", default=f"{MODEL_ID},pirate", help="models to load")
    parser.add_argument("--out", type=Path, default=Path("bench-results/serving"))
    parser.add_argument(
        "--compare-metrics",
        action="store_true",
        help="instead: the gateway with metrics on vs off (target: on >= 0.98x off)",
    )
    args = parser.parse_args()

    from adapters.tooling.demo_kit import ensure_demo_kit

    kit = ensure_demo_kit()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    rows: list[dict[str, Any]] = []
    a, b = ("off", "on") if args.compare_metrics else ("vllm", "gateway")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        ports = {a: free_port(), b: free_port()}
        if args.compare_metrics:
            servers = {
                name: start_gateway(
                    kit.base_dir,
                    kit.adapters,
                    ports[name],
                    Path(tmp) / name,
                    args.out / f"gateway-metrics-{name}.log",
                    metrics=name == "on",
                    env=own_cores(i),
                )
                for i, name in enumerate((a, b))
            }
        else:
            servers = {
                a: start_vllm(
                    kit.base_dir, kit.adapters, ports[a], args.out / "vllm.log", own_cores(0)
                ),
                b: start_gateway(
                    kit.base_dir,
                    kit.adapters,
                    ports[b],
                    Path(tmp) / "gw",
                    args.out / "gw.log",
                    env=own_cores(1),
                ),
            }
        for proc in servers.values():
            stack.callback(proc.wait, 60)
            stack.callback(proc.terminate)
        for name, proc in servers.items():
            ready = "/health" if name == "vllm" else "/ready"
            wait_ready(f"http://127.0.0.1:{ports[name]}{ready}", proc)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for model in args.models.split(","):
            for r in range(args.rounds):
                for name in (a, b) if r % 2 == 0 else (b, a):
                    res = run_client(
                        urls[name], model, kit.base_dir, args, args.out, f"{model}-{name}-{r}"
                    )
                    rows.append(
                        {
                            "model": model,
                            "round": r,
                            "server": name,
                            "failed": res["failed"],
                            "output_tps": res["output_throughput"],
                            "median_ttft_ms": res["median_ttft_ms"],
                            "median_tpot_ms": res["median_tpot_ms"],
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
    print_table(rows, args)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    return 0


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    a, b = ("off", "on") if args.compare_metrics else ("vllm", "gateway")
    target = "metrics on / off" if args.compare_metrics else "gateway / vLLM"
    print(
        f"\nvllm.benchmarks.serve, random {args.input_len} in / {args.output_len} out, "
        f"{args.num_prompts} prompts, concurrency {args.concurrency}, {args.rounds} rounds\n"
    )
    print("| model | server | output tok/s (median) | median TTFT ms | median TPOT ms | failed |")
    print("|---|---|---|---|---|---|")
    for model in dict.fromkeys(r["model"] for r in rows):
        medians = {}
        for server in (a, b):
            mine = [r for r in rows if r["model"] == model and r["server"] == server]
            tps = statistics.median(r["output_tps"] for r in mine)
            ttft = statistics.median(r["median_ttft_ms"] for r in mine)
            tpot = statistics.median(r["median_tpot_ms"] for r in mine)
            failed = sum(r["failed"] for r in mine)
            medians[server] = (tps, ttft)
            print(f"| {model} | {server} | {tps:.1f} | {ttft:.0f} | {tpot:.1f} | {failed} |")
        ratio_tps = medians[b][0] / medians[a][0]
        ratio_ttft = medians[b][1] / medians[a][1]
        tps_target = "0.98" if args.compare_metrics else "0.95"
        print(
            f"| {model} | **{target}** | **{ratio_tps:.3f}x** (target >= {tps_target}) "
            f"| **{ratio_ttft:.3f}x** (target <= 1.10) | | |"
        )
        # Rounds ran back to back in pairs: the median of per-round ratios cancels drift.
        by_round = {(r["round"], r["server"]): r for r in rows if r["model"] == model}
        paired = [
            by_round[(i, b)]["output_tps"] / by_round[(i, a)]["output_tps"]
            for i in sorted({r["round"] for r in rows if r["model"] == model})
        ]
        print(
            f"| {model} | per-round {target} | "
            + ", ".join(f"{x:.3f}" for x in paired)
            + f" (median {statistics.median(paired):.3f}x) | | | |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
