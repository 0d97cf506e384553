"""Base vs adapter rounds in one offline vLLM engine, in CPU seconds: the CPU LoRA ops'
cost inside the model, robust to other work on the machine.

    OMP_NUM_THREADS=1 python -m loadtests.bench_lora_engine MODEL_DIR [--rounds 3]
    OMP_NUM_THREADS=1 LORAGATE_CPU_LORA_OPS=ops-only python -m loadtests.bench_lora_engine ...
    OMP_NUM_THREADS=1 LORAGATE_CPU_LORA_OPS=vllm python -m loadtests.bench_lora_engine ...

The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so
``time.process_time`` covers the model; one OpenMP thread keeps a loaded machine from
turning every parallel region into a wait for a descheduled thread. The adapter is a
random rank-8 LoRA on q/k/v/o (``bench_adapters.write_adapters``: it costs what a
trained one costs). Each round: ``--prompts`` fresh prompts of 120 random words,
``--max-tokens`` output tokens (``ignore_eos``), temperature 0. The first adapter round
comes first (anything paid once shows there); the last round repeats its prompts (prefix
cache). The plugin installs the grouped ops and ``cpu_lora_linear``'s ``add_lora_linear``
unless ``LORAGATE_CPU_LORA_OPS`` says otherwise (``ops-only``: the grouped ops under
vLLM's method; ``vllm``: vLLM's ops); the ops and the method in use are printed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests.bench_adapters import write_adapters

WORDS = [
    "sea",
    "ship",
    "wind",
    "harbour",
    "captain",
    "sail",
    "rope",
    "anchor",
    "deck",
    "storm",
    "island",
    "map",
    "gold",
]


def run(args: argparse.Namespace, adapter: Path) -> list[dict[str, Any]]:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    from vllm import LLM, SamplingParams
    from vllm.lora.punica_wrapper import punica_cpu
    from vllm.lora.request import LoRARequest

    llm = LLM(
        model=str(args.model),
        dtype=args.dtype,
        enable_lora=True,
        max_loras=2,
        max_lora_rank=8,
        max_model_len=1024,
        kv_cache_memory_bytes=1 << 30,
        enforce_eager=True,  # vLLM runs CPU models eagerly with LoRA anyway
        seed=0,
    )
    print(f"LoRA ops: {punica_cpu.sgmv_shrink.__module__}", flush=True)
    linear = punica_cpu.PunicaWrapperCPU.add_lora_linear
    print(f"add_lora_linear: {linear.__module__}", flush=True)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    lora = LoRARequest("bench", 1, str(adapter))
    rng = random.Random(0)
    rows: list[dict[str, Any]] = []

    def prompts() -> list[str]:
        return [" ".join(rng.choice(WORDS) for _ in range(120)) for _ in range(args.prompts)]

    def round_(tag: str, request: Any, batch: list[str]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        llm.generate(batch, params, lora_request=request, use_tqdm=False)
        rows.append(
            {
                "round": tag,
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
            }
        )
        print(rows[-1], flush=True)

    first = prompts()
    round_("adapter first", lora, first)
    for r in range(args.rounds):
        round_(f"base {r}", None, prompts())
        round_(f"adapter {r}", lora, prompts())
    round_("adapter, first round's prompts", lora, first)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n| round | CPU s | wall s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['round']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} |")
    cpu = {r["round"]: r["cpu_s"] for r in rows}
    ratios = [
        cpu[f"adapter {i}"] / cpu[f"base {i}"] for i in range(len(rows)) if f"base {i}" in cpu
    ]
    print(
        "\nadapter / base CPU time per round: "
        + ", ".join(f"{x:.2f}" for x in ratios)
        + f" (median {statistics.median(ratios):.2f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a Llama-family model folder")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        adapter = write_adapters(args.model, Path(tmp), ["bench"], first_seed=1)["bench"]
        print_table(run(args, adapter))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
