"""A tiny random BERT folder written with numpy alone (no torch): what a sentence-transformers
folder holds for the int8 embedder (``config.json``, ``model.safetensors`` with
``BertModel``'s keys, MiniLM's ``tokenizer.json``, ``sentence_bert_config.json``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from retrieval.embedding import bundled_model_dir

HIDDEN = 32
LAYERS = 2
INTERMEDIATE = 64


def write_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Fill ``folder`` (made if missing) and return it."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    weights = {
        "embeddings.word_embeddings.weight": normal(30522, HIDDEN),
        "embeddings.position_embeddings.weight": normal(128, HIDDEN),
        "embeddings.token_type_embeddings.weight": normal(2, HIDDEN),
        "embeddings.LayerNorm.weight": np.ones(HIDDEN, dtype=np.float32),
        "embeddings.LayerNorm.bias": np.zeros(HIDDEN, dtype=np.float32),
    }
    shapes = {
        "attention.self.query": (HIDDEN, HIDDEN),
        "attention.self.key": (HIDDEN, HIDDEN),
        "attention.self.value": (HIDDEN, HIDDEN),
        "attention.output.dense": (HIDDEN, HIDDEN),
        "intermediate.dense": (INTERMEDIATE, HIDDEN),
        "output.dense": (HIDDEN, INTERMEDIATE),
    }
    for layer in range(LAYERS):
        prefix = f"encoder.layer.{layer}"
        for name, (rows, columns) in shapes.items():
            weights[f"{prefix}.{name}.weight"] = normal(rows, columns)
            weights[f"{prefix}.{name}.bias"] = normal(rows)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            weights[f"{prefix}.{norm}.weight"] = np.ones(HIDDEN, dtype=np.float32)
            weights[f"{prefix}.{norm}.bias"] = np.zeros(HIDDEN, dtype=np.float32)
    save_file(weights, str(folder / "model.safetensors"))
    config = {
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": HIDDEN,
        "num_attention_heads": 2,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 128,
        "layer_norm_eps": 1e-12,
        "vocab_size": 30522,
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    shutil.copy(bundled_model_dir() / "tokenizer.json", folder / "tokenizer.json")
    return folder
