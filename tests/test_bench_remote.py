"""The remote benchmarks' pure logic (``loadtests.bench_remote``, ``bench_affinity``,
``replica_process``): configs the gateway accepts, the request sequence, ratios and
tables. No engine: the benchmarks themselves run with ``make bench-remote``."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base_model import BaseModelSpec
from adapters.validation import AdapterValidator
from gateway.settings import RemoteEngineSettings, Settings
from gateway.settings.keys import generate_key
from loadtests import bench_affinity, bench_remote
from loadtests.replica_process import ReplicaProcess
from tests.support.modelkit import tiny_llama_dir


def rows(direct: list[tuple[float, float]], gateway: list[tuple[float, float]]) -> list[dict]:
    out = []
    for server, figures in (("direct", direct), ("gateway", gateway)):
        for r, (tps, ttft) in enumerate(figures):
            out.append(
                {
                    "round": r,
                    "server": server,
                    "failed": 0,
                    "output_tps": tps,
                    "median_ttft_ms": ttft,
                    "median_tpot_ms": 10.0,
                    "gateway_cpu_ms_per_request": 2.0 if server == "gateway" else None,
                }
            )
    return out


def test_rounds_alternate_abba() -> None:
    assert [bench_remote.round_order(i) for i in range(3)] == [
        ("direct", "gateway"),
        ("gateway", "direct"),
        ("direct", "gateway"),
    ]
    assert bench_affinity.run_order(2) == ["affinity", "round_robin", "round_robin", "affinity"]


def test_summary_ratios_and_verdicts() -> None:
    summary = bench_remote.summarize(
        rows([(40, 1000), (42, 1100), (44, 900)], [(39, 1020), (41.5, 1200), (43, 1000)])
    )
    assert summary["tps_ratio"] == pytest.approx(41.5 / 42)
    assert summary["ttft_ratio"] == pytest.approx(1020 / 1000)
    assert summary["round_tps_ratios"] == pytest.approx([39 / 40, 41.5 / 42, 43 / 44])
    table = bench_remote.render_table(summary, bench_remote.Load(), 3, "load 1.0")
    assert "0.988x" in table and "met" in table and "1.020x" in table
    missed = bench_remote.summarize(rows([(40, 1000)], [(30, 2000)]))
    assert bench_remote.render_table(missed, bench_remote.Load(), 1, "").count("MISSED") == 2


def test_the_bench_client_sends_completions_with_ignore_eos(tmp_path: Path) -> None:
    cmd = bench_remote.client_command(
        "http://x", "m", tmp_path, bench_remote.Load(num_prompts=8), tmp_path, "r.json"
    )
    assert cmd[cmd.index("--backend") + 1] == "openai"
    assert cmd[cmd.index("--endpoint") + 1] == "/v1/completions"
    assert "--ignore-eos" in cmd and cmd[cmd.index("--num-prompts") + 1] == "8"


def test_gateway_configs_validate(tmp_path: Path) -> None:
    key = generate_key()
    config = bench_remote.gateway_config(
        tiny_llama_dir(), "http://127.0.0.1:9", 8000, tmp_path, (key.key_id, key.hash)
    )
    settings = Settings.load(None, **config)
    assert isinstance(settings.engine, RemoteEngineSettings)
    assert settings.tenancy().tenants["bench"].models == ["*"]
    assert Settings.load(
        None, **bench_remote.gateway_config(tiny_llama_dir(), "http://h:1", 1, tmp_path, None)
    )
    for policy in bench_affinity.POLICIES:
        adapters = {"z1": tmp_path}
        cfg = bench_affinity.gateway_config(
            tiny_llama_dir(), adapters, ["http://a:1", "http://b:1"], policy, 8000, tmp_path, 2
        )
        engine = Settings.load(None, **cfg).engine
        assert isinstance(engine, RemoteEngineSettings) and engine.placement == policy


def test_request_sequence_is_seeded_and_zipf_shaped() -> None:
    weights = bench_affinity.zipf_weights(8, 1.0)
    assert sum(weights) == pytest.approx(1.0)
    assert weights == sorted(weights, reverse=True) and weights[0] == pytest.approx(8 * weights[7])
    names = [f"z{i}" for i in range(1, 9)]
    jobs = bench_affinity.request_sequence(names, 400, s=1.0, input_len=5, vocab=1000, seed=3)
    assert jobs == bench_affinity.request_sequence(
        names, 400, s=1.0, input_len=5, vocab=1000, seed=3
    )
    assert jobs != bench_affinity.request_sequence(
        names, 400, s=1.0, input_len=5, vocab=1000, seed=4
    )
    counts = [sum(j.adapter == n for j in jobs) for n in names]
    assert counts[0] > 2 * counts[3] > 0 and all(len(j.prompt) == 5 for j in jobs)


def test_random_lora_is_a_valid_adapter(tmp_path: Path) -> None:
    base = tiny_llama_dir()
    out = bench_affinity.write_random_lora(base, tmp_path / "z1", seed=1)
    validated = AdapterValidator(BaseModelSpec.from_directory(base, name="tiny-base")).validate(out)
    assert validated.rank == 8


def test_replica_log_counts(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    replica = ReplicaProcess(tiny_llama_dir(), core=0, log=log, max_cpu_loras=4)
    assert replica.adapter_loads() == [] and replica.completions_served() == 0
    log.write_text(
        "(APIServer pid=1) INFO [serving.py:227] Loaded new LoRA adapter: name 'z1@v1', "
        "path '/a/z1'\n"
        'INFO:     127.0.0.1:5 - "POST /v1/completions HTTP/1.1" 200 OK\n'
        'INFO:     127.0.0.1:5 - "POST /v1/completions HTTP/1.1" 400 Bad Request\n'
        "(APIServer pid=1) INFO Loaded new LoRA adapter: name 'z2@v1', path '/a/z2'\n"
    )
    assert replica.adapter_loads() == ["z1@v1", "z2@v1"]
    assert replica.completions_served() == 1
    command = replica.command()
    assert command[command.index("--max-cpu-loras") + 1] == "4"
    assert command[command.index("--dtype") + 1] == "float32"


def test_affinity_table_counts_startup_and_run_loads() -> None:
    def run(policy: str, startup: list[int], loads: list[int], tps: float) -> dict:
        return {
            "policy": policy,
            "startup_loads": startup,
            "loads": loads,
            "requests": [16, 16],
            "output_tps": tps,
            "median_latency_s": 1.0,
            "failed": 0,
        }

    summary = bench_affinity.summarize(
        [run("affinity", [4, 4], [0, 0], 10.0), run("round_robin", [4, 4], [4, 4], 8.0)]
    )
    assert summary["round_robin"]["loads"] == [4, 4]
    table = bench_affinity.render_table(summary, "header")
    assert "8 vs 16 loads in all" in table and "**1.250x** tok/s" in table
