"""The CPU LoRA ops inside the real vLLM engine: mixed batches keep every request apart.

Base model + six adapters on two LoRA slots (three in CPU memory), each prompt alone
("solo") and then all together in one ``generate`` call, at temperature 0. The engine
core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the plugin patches
this process's vLLM and the test can see that the grouped ops ran.

- float32: every output of the mixed batch equals its solo output, token for token.
- bfloat16: batches are not bit-reproducible across batch shapes (a GEMM's rounding
  depends on its row count), so a mixed output may drift from its solo output late in
  the sequence; each output must still carry its own model's signature: the first
  tokens of its solo output, and a longer common prefix with it than with any other
  model's solo output (the base model's included: it never takes an adapter's style).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.engine

PROMPTS = ["Tell me about the sea.", "Write a short note to the harbour master."]
MAX_TOKENS = 16
SIGNATURE_TOKENS = 4


def start_llm(base: Path, dtype: Any) -> Any:
    from vllm import LLM

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        mp.setenv("VLLM_NO_USAGE_STATS", "1")
        mp.delenv("LORAGATE_CPU_LORA_OPS", raising=False)
        mp.delenv("LORAGATE_DISABLE_PLATFORM_FIXES", raising=False)
        return LLM(
            model=str(base),
            dtype=dtype,
            enable_lora=True,
            max_loras=2,
            max_cpu_loras=3,
            max_lora_rank=8,
            max_model_len=512,
            kv_cache_memory_bytes=1 << 27,
            enforce_eager=True,
            seed=0,
        )


@pytest.fixture(params=["float32", "bfloat16"], scope="module")
def engine(request: pytest.FixtureRequest, tiny_kit: tuple[Path, dict[str, Path]]) -> Iterator[Any]:
    base, _ = tiny_kit
    llm = start_llm(base, request.param)
    yield request.param, llm
    del llm
    gc.collect()


def generate(llm: Any, jobs: list[tuple[str, str]], adapters: dict[str, Path]) -> list[list[int]]:
    """Token ids for ``(model, prompt)`` jobs in one ``generate`` call (one batch)."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    names = list(adapters)
    requests = [
        None
        if model == "base"
        else LoRARequest(model, names.index(model) + 1, str(adapters[model]))
        for model, _ in jobs
    ]
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    outputs = llm.generate([p for _, p in jobs], params, lora_request=requests, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_each_request_of_a_mixed_batch_keeps_its_own_model(
    engine: tuple[str, Any], tiny_kit: tuple[Path, dict[str, Path]]
) -> None:
    from gateway.engine import cpu_lora_linear

    dtype, llm = engine
    adapters = tiny_kit[1]
    models = ["base", *adapters]
    solo = {(m, p): generate(llm, [(m, p)], adapters)[0] for m in models for p in PROMPTS}
    for p in PROMPTS:
        starts = {tuple(solo[(m, p)][:SIGNATURE_TOKENS]) for m in models}
        assert len(starts) == len(models), "every model must start its answer its own way"

    cpu_lora_linear.clear_layer_cache()
    # Models interleaved, so decode rows alternate between adapters and the base.
    jobs = [(m, p) for p in PROMPTS for m in models]
    jobs += jobs[::-1]
    mixed = generate(llm, jobs, adapters)
    assert cpu_lora_linear.cached_layers(), "the engine did not run cpu_lora_linear's method"

    for (model, prompt), tokens in zip(jobs, mixed, strict=True):
        own = solo[(model, prompt)]
        if dtype == "float32":
            assert tokens == own, f"{model} changed inside a mixed batch"
            continue
        mine = common_prefix(tokens, own)
        assert mine >= SIGNATURE_TOKENS, f"{model} lost its first tokens in a mixed batch"
        for other in models:
            if other != model:
                theirs = common_prefix(tokens, solo[(other, prompt)])
                assert mine > theirs, f"{model}'s output looks like {other}'s"
