"""Random (or all-zero) PEFT LoRA adapters for a Llama-style base model.

What benchmarks and tests need when the adapter's quality does not matter: it costs
what a trained adapter of the same rank costs to validate, load and apply, and it is
written in well under a second. An all-zero adapter changes nothing, so it reproduces
the base model's output exactly through the LoRA path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def write_random_lora(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    rank: int = 8,
    alpha: int | None = None,
    scale: float = 0.01,
    zero: bool = False,
    target_modules: tuple[str, ...] = ATTENTION_MODULES,
    dtype: Literal["float32", "bfloat16"] = "float32",
) -> Path:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` into ``out_dir``
    for the model whose ``config.json`` is in ``base_dir``; return ``out_dir``.

    Weights are ``scale`` times standard normal draws from ``seed`` (zeros when
    ``zero``), stored as ``dtype``; ``alpha`` defaults to twice the rank.
    """
    import torch  # heavy: only where adapters are written
    from safetensors.torch import save_file

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
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
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
            tensors[f"{prefix}.lora_A.weight"] = a.to(torch_dtype).contiguous()
            tensors[f"{prefix}.lora_B.weight"] = b.to(torch_dtype).contiguous()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_dir),
        "r": rank,
        "lora_alpha": 2 * rank if alpha is None else alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "target_modules": list(target_modules),
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(peft_config, indent=2))
    return out_dir


def write_random_fleet(
    base_dir: Path,
    root: Path,
    count: int,
    *,
    seed: int,
    ranks: tuple[int, int] = (8, 16),
    target_modules: tuple[str, ...] = ("q_proj", "v_proj"),
    dtype: Literal["float32", "bfloat16"] = "bfloat16",
    prefix: str = "f",
) -> dict[str, int]:
    """Write ``count`` random adapters ``<root>/<prefix>NNNN/``, each with a rank drawn
    uniformly from ``ranks`` (inclusive, seeded) and weights seeded by ``seed`` and its
    index; return each adapter's name and rank, in order."""
    import random

    draw = random.Random(seed)
    width = max(4, len(str(count - 1)))
    fleet: dict[str, int] = {}
    for index in range(count):
        name = f"{prefix}{index:0{width}d}"
        rank = draw.randint(*ranks)
        write_random_lora(
            base_dir,
            root / name,
            seed=seed * 1_000_003 + index,
            rank=rank,
            target_modules=target_modules,
            dtype=dtype,
        )
        fleet[name] = rank
    return fleet
