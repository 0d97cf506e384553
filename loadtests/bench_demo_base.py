"""Candidate base models for the demo, measured with ``loragate compare --demo``.

For each ``--base NAME=DIR`` (``DIR`` a converted Hugging Face folder; ``kit`` for the
demo kit's SmolLM2 and its adapters), one after another: write a demo config that
serves that base (the demo's tenants, prompts, collections and engine settings, with
its own keys and registry under ``--out``), start ``loragate serve`` on loopback, run
``loragate compare --demo`` (the shipped 66 items, streaming, temperature 0) with the
demo's variants, stop the server, and record the load average before and after.

Variants: the kit runs all of ``gateway/demo/eval/variants.yaml``. Another base runs
``base+prompt`` and ``base+prompt+rag`` only, with the same prompts and retrieval and
the base's own served name: the demo adapters are trained on SmolLM2 and fit no other
base. ``NAME=DIR:N`` limits a base to the first N items (a slow candidate).

Prints, per base, variant and language: fact accuracy and citation accuracy, then the
paired bootstrap interval of fact accuracy (each RAG variant minus ``base+prompt``,
per language: the issue's "beyond noise"), TTFT p50, the median per-request decode
rate, and the run's output tokens per second of compare's wall time. Answers are
kept in ``OUT/NAME/results.jsonl``: a rerun asks only for missing ones, and
``--report-only`` just prints the table again.

    nice -n 19 python -m loadtests.bench_demo_base --out /tmp/demo-bench \\
        --base smollm2-135m-instruct=kit --base gemma3-270m=/path/to/folder
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtests.bench_budget import cpu_name
from loadtests.bench_serving import wait_ready
from loadtests.target import free_port

KIT = "kit"
BASE_VARIANTS = ("base+prompt", "base+prompt+rag")
REFERENCE = "base+prompt"
RAG_VARIANTS = ("base+prompt+rag", "lora+rag", "support-bot")
SUMMARY_FILE = "run.json"


@dataclass(frozen=True)
class Base:
    name: str
    folder: str
    limit: int | None

    @property
    def is_kit(self) -> bool:
        return self.folder == KIT


def parse_base(text: str) -> Base:
    name, sep, rest = text.partition("=")
    folder, _, limit = rest.rpartition(":") if rest.rpartition(":")[2].isdigit() else (rest, "", "")
    if not (sep and name and folder):
        raise argparse.ArgumentTypeError(f"expected NAME=DIR[:N] or NAME=kit, got {text!r}")
    return Base(name, folder, int(limit) if limit else None)


def _demo_eval_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("gateway.demo") / "eval"))


def variants_for(base: Base) -> dict[str, Any]:
    """The demo's variants; for another base, those without an adapter, on its name."""
    data = yaml.safe_load((_demo_eval_dir() / "variants.yaml").read_text())
    if base.is_kit:
        return dict(data)
    kept = [dict(v, model=base.name) for v in data["variants"] if v["name"] in BASE_VARIANTS]
    return {"max_tokens": data["max_tokens"], "variants": kept}


def gateway_config(base: Base, workdir: Path, port: int) -> tuple[dict[str, Any], str]:
    """The demo's config serving ``base`` (and the acme key for compare)."""
    from adapters.tooling.demo_kit import default_cache_dir, ensure_demo_kit
    from gateway.demo.config import DEMO_MODEL_ID, demo_config
    from gateway.demo.keys import load_or_create_keys
    from gateway.demo.knowledge import ensure_demo_collections
    from gateway.demo.runner import demo_paths
    from gateway.settings import Settings

    cache = default_cache_dir()
    kit = ensure_demo_kit(cache, progress=False)
    retrieval = Settings.load(None, model={"path": kit.base_dir}).retrieval
    kb = ensure_demo_collections(cache, retrieval, progress=False)
    keys = load_or_create_keys(workdir)
    paths = demo_paths(kit, kb)
    paths = type(paths)(
        base_model=paths.base_model if base.is_kit else Path(base.folder),
        adapters=paths.adapters if base.is_kit else {},
        collections_root=paths.collections_root,
        data_dir=workdir / "registry",
        adapter_root=paths.adapter_root if base.is_kit else None,
    )
    server = {"host": "127.0.0.1", "port": port, "log_level": "warning"}
    config = demo_config(paths, keys, server)
    for tenant in config["tenants"].values():
        # compare's requests are the load here, not a client to be held back.
        tenant["rate_limit"] = {"requests_per_minute": 100_000}
    if not base.is_kit:
        config["model"]["name"] = base.name
        for tenant in config["tenants"].values():
            # No adapter fits this base: the tenants get the base model and the embedder.
            tenant["models"] = [base.name if m == DEMO_MODEL_ID else m for m in tenant["models"]]
            tenant["models"] = [m for m in tenant["models"] if m not in kit.adapters]
            tenant.pop("aliases", None)
            tenant["default_model"] = base.name
    return config, keys.key("acme")


def run_base(base: Base, out: Path, concurrency: int) -> dict[str, Any]:
    """Serve ``base``, answer the eval set through compare, stop; timings and loads."""
    from gateway.demo.config import write_demo_config

    workdir = out / base.name
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config, key = gateway_config(base, workdir, port)
    config_path = workdir / "gateway.yaml"
    write_demo_config(config_path, config)
    variants_path = workdir / "variants.yaml"
    variants_path.write_text(yaml.safe_dump(variants_for(base), sort_keys=False))
    run: dict[str, Any] = {"base": base.name, "folder": base.folder, "limit": base.limit}
    run["load_before"] = os.getloadavg()
    started = time.monotonic()
    log = workdir / "serve.log"
    with log.open("ab") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/ready", server, timeout=1800, log=log)
        run["engine_start_s"] = round(time.monotonic() - started, 1)
        command = [
            sys.executable, "-m", "gateway.cli", "compare", "--demo",
            "--variants", str(variants_path), "--out", str(workdir),
            "--base-url", f"http://127.0.0.1:{port}/v1", "--api-key", key,
            "--concurrency", str(concurrency), "--no-progress",
        ]  # fmt: skip
        if base.limit is not None:
            command += ["--limit", str(base.limit)]
        begun = time.monotonic()
        done = subprocess.run(command, check=False, capture_output=True, text=True)
        run["compare_wall_s"] = round(time.monotonic() - begun, 1)
        run["compare_rc"] = done.returncode
        (workdir / "compare.log").write_text(done.stdout + done.stderr)
    finally:
        server.terminate()
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
    run["load_after"] = os.getloadavg()
    runs = _saved_runs(workdir)
    runs.append(run)
    (workdir / SUMMARY_FILE).write_text(json.dumps(runs, indent=2) + "\n")
    return run


def _saved_runs(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / SUMMARY_FILE
    return list(json.loads(path.read_text())) if path.is_file() else []


def report_base(base: Base, out: Path, resamples: int) -> list[str]:
    """Table rows for one base from its saved answers."""
    from gateway.compare.eval_set import load_eval_set
    from gateway.compare.metrics import METRIC_BY_KEY, paired_values, score_all, value
    from gateway.compare.results import ResultsFile, item_fingerprint
    from gateway.compare.stats import paired_bootstrap
    from gateway.compare.variants import fingerprint, load_variants

    workdir = out / base.name
    items = load_eval_set(_demo_eval_dir() / "eval.jsonl")
    if base.limit is not None:
        items = items[: base.limit]
    variants = load_variants(workdir / "variants.yaml")
    results = ResultsFile(workdir / "results.jsonl")
    try:
        records, _ = results.current(
            {i.id: item_fingerprint(i) for i in items},
            {v.name: fingerprint(v, variants.max_tokens) for v in variants.variants},
        )
    finally:
        results.close()
    names = [v.name for v in variants.variants]
    scored = score_all(items, names, records)
    fact, cite = METRIC_BY_KEY["fact_accuracy"], METRIC_BY_KEY["citation_accuracy"]
    runs = _saved_runs(workdir)
    tokens = sum(r.completion_tokens or 0 for r in records.values())
    wall = sum(r.get("compare_wall_s", 0.0) for r in runs)
    rows = []
    for name in names:
        answers = scored[name]
        ok = [s.record for s in answers.values() if s.record.ok]
        rates = [
            (r.completion_tokens - 1) / (r.latency_s - r.ttft_s)
            for r in ok
            if r.completion_tokens and r.completion_tokens > 1 and r.latency_s and r.ttft_s
            and r.latency_s > r.ttft_s
        ]  # fmt: skip
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        for lang in sorted({i.lang for i in items}):
            ids = [i.id for i in items if i.lang == lang]
            in_lang = [answers[i] for i in ids if i in answers]
            interval = "-"
            if name != REFERENCE and name in RAG_VARIANTS:
                x, y = paired_values(fact, ids, answers, scored[REFERENCE])
                d = paired_bootstrap(x, y, "mean", resamples=resamples, seed=0)
                mark = " *" if d.significant else ""
                interval = (
                    f"{d.estimate * 100:+.0f} [{d.low * 100:+.0f}, {d.high * 100:+.0f}]{mark}"
                )
            rows.append(
                "| "
                + " | ".join(
                    [
                        base.name,
                        name,
                        lang,
                        str(len(in_lang)),
                        _pct(value(fact, in_lang)),
                        _pct(value(cite, in_lang)),
                        interval,
                        f"{statistics.median(ttfts):.2f}" if ttfts else "-",
                        f"{statistics.median(rates):.1f}" if rates else "-",
                        f"{tokens / wall:.1f}" if wall else "-",
                    ]
                )
                + " |"
            )
    for run in runs:
        rows.append(
            f"| {base.name} | run | load {_load(run['load_before'])} -> "
            f"{_load(run['load_after'])}, engine start {run.get('engine_start_s', '-')} s, "
            f"compare {run.get('compare_wall_s', '-')} s (rc {run.get('compare_rc', '-')}) "
            "| | | | | | | |"
        )
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def _load(avg: list[float] | tuple[float, ...]) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument(
        "--base",
        type=parse_base,
        action="append",
        required=True,
        metavar="NAME=DIR[:N]",
        help="a converted base model folder (repeatable, run in order); NAME=kit: the demo kit",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="compare's (default 4)")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--report-only", action="store_true", help="no runs: print the table")
    args = parser.parse_args()
    print(f"# CPU: {cpu_name()}, {os.cpu_count()} cores, nice {os.nice(0)}")
    if not args.report_only:
        for base in args.base:
            run = run_base(base, args.out, args.concurrency)
            print(f"# {json.dumps(run)}", flush=True)
    print(
        "| base | variant | lang | answers | fact acc | citation acc | fact acc vs base+prompt, "
        "points [95% CI] | TTFT p50 s | decode tok/s p50 | run out tok/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for base in args.base:
        for row in report_base(base, args.out, args.resamples):
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
