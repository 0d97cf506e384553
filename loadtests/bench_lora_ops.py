"""Micro-benchmark of the CPU LoRA ops: vLLM's torch ops against ``cpu_lora_ops``.

    python -m loadtests.bench_lora_ops [--dtype bfloat16] [--threads 1]
        [--tokens 16,256,2048] [--ranks 8,16] [--widths 576,2048] [--adapters 1,4]

One LoRA projection as vLLM's CPU punica wrapper runs it in the engine (V1 always takes
the ``sgmv`` path): ``sgmv_shrink`` into a float32 buffer, then ``sgmv_expand`` adding
into the output, for ``tokens`` rows spread over ``adapters`` adapters, in runs as
vLLM's ``compute_meta`` hands them over: one run per adapter for the prefill shape, and
adapters interleaved one row at a time for the decode shape (``tokens`` <= 64, one row
per request). The base model's own ``width x width`` GEMM on the same rows is the
yardstick (the demo adapters touch q, k, v and o; SmolLM2-135M is 576 wide).

vLLM's ops are loaded from vLLM's file under another name, so the figures are its code
as shipped even where the loragate plugin has patched the imported module. vLLM runs
the model with one torch thread on a 2-core box ("Reducing Torch threads from 2 to 1"),
hence ``--threads 1``. Prints a markdown table (median of ``--repeats`` timed calls).

``--layers`` adds a second table: one decoder layer of SmolLM2-135M as vLLM's CPU
punica wrapper runs it (``add_lora_linear`` on q/k/v, o, gate/up and down) for an
adapter on q, k, v and o (zeros in the MLP layers, as vLLM leaves them), with vLLM's ops,
with the grouped ops under vLLM's wrapper, and with ``cpu_lora_linear``'s method
(empty layers skipped, one shrink and one expand GEMM per adapter for q/k/v).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

SLOTS = 8
DECODE_MAX_TOKENS = 64


def vllm_torch_ops() -> ModuleType:
    """vLLM's ``torch_ops/lora_ops.py`` as shipped (not the plugin-patched module)."""
    import vllm.lora.ops.torch_ops as package

    path = f"{package.__path__[0]}/lora_ops.py"
    spec = importlib.util.spec_from_file_location("vllm_torch_lora_ops_as_shipped", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def median_ms(fn: Callable[[], Any], repeats: int, budget_s: float = 5.0) -> float:
    fn()  # first call: allocations, oneDNN primitive creation
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < repeats and (len(samples) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def case(tokens: int, rank: int, width: int, adapters: int, dtype: Any) -> dict[str, Any]:
    """Inputs of one projection and the segment metadata vLLM would pass."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, width, generator=gen).to(dtype)
    a = (torch.randn(SLOTS, 1, rank, width, generator=gen) / width**0.5).to(dtype)
    b = (torch.randn(SLOTS, 1, width, rank, generator=gen) / rank**0.5).to(dtype)
    slots = torch.arange(adapters)
    if tokens <= DECODE_MAX_TOKENS:  # decode: one row per request, adapters interleaved
        per_row = slots.repeat(tokens // adapters + 1)[:tokens]
    else:  # prefill: each adapter's requests next to each other
        per_row = torch.repeat_interleave(slots, tokens // adapters + 1)[:tokens]
    loras, lengths = torch.unique_consecutive(per_row, return_counts=True)
    starts = torch.cumsum(lengths, 0) - lengths
    meta = (starts, lengths, loras, len(loras), int(lengths.max()), tokens)
    return {
        "x": x,
        "a": a,
        "b": b,
        "meta": meta,
        "buffer": torch.zeros(tokens, rank),  # vLLM's shrink buffer is float32
        "out": torch.zeros(tokens, width, dtype=dtype),
        "base_weight": torch.randn(width, width, generator=gen).to(dtype),
        "shape": "decode" if tokens <= DECODE_MAX_TOKENS else "prefill",
    }


def projection(ops: Any, c: dict[str, Any]) -> Callable[[], None]:
    def run() -> None:
        ops.sgmv_shrink(c["x"], c["a"], c["buffer"], *c["meta"], 1.0)
        ops.sgmv_expand(c["buffer"], c["b"], c["out"], *c["meta"], True)

    return run


def base_gemm(c: dict[str, Any]) -> Callable[[], Any]:
    import torch

    return lambda: torch.mm(c["x"], c["base_weight"])


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from gateway.engine import cpu_lora_ops

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    shipped = vllm_torch_ops()
    rows = []
    for tokens in args.tokens:
        for rank in args.ranks:
            for width in args.widths:
                for adapters in args.adapters:
                    c = case(tokens, rank, width, adapters, dtype)
                    before = median_ms(projection(shipped, c), args.repeats)
                    after = median_ms(projection(cpu_lora_ops, c), args.repeats)
                    base = median_ms(base_gemm(c), args.repeats)
                    rows.append(
                        {
                            "tokens": tokens,
                            "shape": c["shape"],
                            "rank": rank,
                            "width": width,
                            "adapters": adapters,
                            "vllm_ms": before,
                            "grouped_ms": after,
                            "base_gemm_ms": base,
                        }
                    )
                    print(rows[-1], flush=True)
    return rows


# SmolLM2-135M: (in_features, output slices) of the LoRA-wrapped layers of one decoder
# layer, and whether a q/k/v/o adapter has weights there.
SMOLLM2_LAYER = (
    ("qkv", 576, (576, 192, 192), True),
    ("o", 576, (576,), True),
    ("gate_up", 576, (1536, 1536), False),
    ("down", 1536, (576,), False),
)


def layer_case(tokens: int, rank: int, adapters: int, dtype: Any) -> dict[str, Any]:
    """One decoder layer's LoRA weights and a decode batch (adapters interleaved)."""
    import torch
    from vllm.lora.layers.utils import LoRAMapping

    gen = torch.Generator().manual_seed(0)
    layers = []
    for name, width, slices, filled in SMOLLM2_LAYER:
        scale = 1.0 if filled else 0.0
        a = tuple(
            (scale * torch.randn(SLOTS, 1, rank, width, generator=gen)).to(dtype) for _ in slices
        )
        b = tuple(
            (scale * torch.randn(SLOTS, 1, size, rank, generator=gen)).to(dtype) for size in slices
        )
        x = torch.randn(tokens, width, generator=gen).to(dtype)
        layers.append((name, x, a, b, slices, torch.zeros(tokens, sum(slices), dtype=dtype)))
    ids = (torch.arange(adapters) + 1).repeat(tokens // adapters + 1)[:tokens].tolist()
    return {"layers": layers, "mapping": LoRAMapping(tuple(ids), tuple(ids), is_prefill=False)}


def layer_runner(mode: str, c: dict[str, Any], shipped: ModuleType) -> Callable[[], None]:
    """``mode``: vllm (vLLM's wrapper and ops), ops (vLLM's wrapper, grouped ops), fused."""
    from vllm.lora.punica_wrapper import punica_cpu

    from gateway.engine import cpu_lora_linear, cpu_lora_ops

    class Wrapper(punica_cpu.PunicaWrapperCPU):
        pass

    for name in ("update_metadata", "add_lora_linear"):  # vLLM's own, even if patched
        method = getattr(punica_cpu.PunicaWrapperCPU, name)
        setattr(Wrapper, name, getattr(method, "__wrapped__", method))
    if mode == "fused":
        cpu_lora_linear.install(Wrapper)
    ops = shipped if mode == "vllm" else cpu_lora_ops
    wrapper = Wrapper(max_num_batched_tokens=4096, max_batches=256, device="cpu")
    wrapper.update_metadata(c["mapping"], list(range(1, SLOTS + 1)), SLOTS, 49152)

    def run() -> None:
        saved = {name: getattr(punica_cpu, name) for name in cpu_lora_ops.OPS}
        for name in cpu_lora_ops.OPS:
            setattr(punica_cpu, name, getattr(ops, name))
        try:
            for _, x, a, b, slices, y in c["layers"]:
                wrapper.add_lora_linear(y, x, a, b, 1.0, slices)
        finally:
            for name, op in saved.items():
                setattr(punica_cpu, name, op)

    return run


def measure_layers(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    dtype = getattr(torch, args.dtype)
    shipped = vllm_torch_ops()
    rows = []
    for tokens in [t for t in args.tokens if t <= DECODE_MAX_TOKENS]:
        for rank in args.ranks:
            for adapters in args.adapters:
                c = layer_case(tokens, rank, adapters, dtype)
                row: dict[str, Any] = {"tokens": tokens, "rank": rank, "adapters": adapters}
                for mode in ("vllm", "ops", "fused"):
                    row[mode] = median_ms(layer_runner(mode, c, shipped), args.repeats)
                rows.append(row)
                print(row, flush=True)
    return rows


def print_layer_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nOne SmolLM2-135M decoder layer's LoRA work in decode (q/k/v/o adapter), "
        f"{args.dtype}, {args.threads} torch thread(s), median ms\n"
    )
    print(
        "| tokens | rank | adapters | vLLM wrapper + vLLM ops | vLLM wrapper + grouped ops "
        "| skip + fused (cpu_lora_linear) | fused vs grouped ops |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tokens']} | {r['rank']} | {r['adapters']} | {r['vllm']:.3f} | {r['ops']:.3f} "
            f"| {r['fused']:.3f} | {r['ops'] / r['fused']:.1f}x |"
        )


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nOne LoRA projection (sgmv_shrink + sgmv_expand), {args.dtype}, "
        f"{args.threads} torch thread(s), median ms\n"
    )
    print(
        "| tokens | shape | rank | width | adapters | vLLM torch ops | grouped | speed-up "
        "| base width x width GEMM |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['tokens']} | {r['shape']} | {r['rank']} | {r['width']} | {r['adapters']} "
            f"| {r['vllm_ms']:.3f} | {r['grouped_ms']:.3f} "
            f"| {r['vllm_ms'] / r['grouped_ms']:.1f}x | {r['base_gemm_ms']:.3f} |"
        )


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=ints, default=[16, 256, 2048])
    parser.add_argument("--ranks", type=ints, default=[8, 16])
    parser.add_argument("--widths", type=ints, default=[576])
    parser.add_argument("--adapters", type=ints, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--layers", action="store_true", help="add the decoder-layer table")
    parser.add_argument("--no-ops", action="store_true", help="skip the projection table")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if not args.no_ops:
        print_table(measure(args), args)
    if args.layers:
        print_layer_table(measure_layers(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
