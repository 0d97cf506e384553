"""A BERT encoder with mean pooling written as an ONNX graph straight from its weights.

The graph is built with the ``onnx`` helper API from the model folder's
``model.safetensors`` (read with ``safetensors.numpy``) and ``config.json``: no torch,
no transformers. It is the graph ONNX Runtime's BERT optimizer makes of a
``torch.onnx`` export of the same model (``transformers`` eager attention, mean pooling
inside the graph), fused operator for fused operator:

* ``EmbedLayerNormalization``: word + position + token-type embeddings, then the layer
  norm; its second output is the mask index (each row's token count) the attention
  operators read;
* per layer, ``Attention`` (the query, key and value projections as one
  ``hidden x 3*hidden`` weight, softmax over the unmasked keys), the output projection
  (``MatMul`` + bias ``Add``), the residual ``Add`` and ``LayerNormalization``, the
  intermediate ``MatMul`` with ``BiasGelu`` (exact, erf-based GELU), the output
  ``MatMul`` + bias, residual and layer norm: the residual adds and layer norms stay
  two operators each (``retrieval.onnx_embedding.DISABLED_OPTIMIZERS`` says why);
* the masked mean over tokens: ``sum(hidden * mask) / max(sum(mask), 1e-9)``.

Only what all-MiniLM-L6-v2 and its BERT relatives use is supported (absolute positions,
GELU, mean pooling); another folder raises :class:`UnsupportedModelError` before any
work is done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
"""ONNX opset of the graph (``LayerNormalization`` needs 17)."""
WEIGHT_PREFIXES = ("", "bert.", "model.")
"""Where a folder's safetensors keys may start (a bare ``BertModel``, or one inside a
task model)."""


class UnsupportedModelError(ValueError):
    """The model folder is not a BERT encoder this builder writes (named in the message)."""


@dataclass(frozen=True, slots=True)
class BertShape:
    """The parts of ``config.json`` the graph depends on."""

    hidden_size: int
    num_heads: int
    num_layers: int
    layer_norm_eps: float

    @classmethod
    def read(cls, model_dir: Path) -> BertShape:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        if config.get("model_type", "bert") != "bert":
            raise UnsupportedModelError(f"{model_dir}: model_type {config.get('model_type')!r}")
        if config.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedModelError(f"{model_dir}: hidden_act {config.get('hidden_act')!r}")
        positions = config.get("position_embedding_type", "absolute")
        if positions != "absolute":
            raise UnsupportedModelError(f"{model_dir}: position_embedding_type {positions!r}")
        return cls(
            hidden_size=int(config["hidden_size"]),
            num_heads=int(config["num_attention_heads"]),
            num_layers=int(config["num_hidden_layers"]),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        )


def check_mean_pooling(model_dir: Path) -> None:
    """Refuse a sentence-transformers folder whose pooling is not the mean of tokens."""
    config = model_dir / "1_Pooling" / "config.json"
    if not config.is_file():
        return  # a bare encoder folder: mean pooling is what this embedder applies
    pooling = json.loads(config.read_text(encoding="utf-8"))
    modes = [key for key, on in pooling.items() if key.startswith("pooling_mode_") and on]
    if modes != ["pooling_mode_mean_tokens"]:
        raise UnsupportedModelError(f"{model_dir}: pooling {modes} (only mean pooling)")


def load_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """The folder's ``model.safetensors`` as float32 arrays, keys without a task prefix."""
    from safetensors.numpy import load_file

    path = model_dir / "model.safetensors"
    if not path.is_file():
        raise UnsupportedModelError(
            f"{model_dir}: no model.safetensors (the int8 export reads safetensors weights)"
        )
    raw = load_file(str(path))
    for prefix in WEIGHT_PREFIXES:
        if f"{prefix}embeddings.word_embeddings.weight" in raw:
            return {
                key.removeprefix(prefix): np.asarray(value, dtype=np.float32)
                for key, value in raw.items()
                if key.startswith(prefix) and np.issubdtype(value.dtype, np.floating)
            }
    raise UnsupportedModelError(f"{model_dir}: no BERT embeddings in model.safetensors")


class _Graph:
    """Nodes and initializers collected while the graph is written."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def weight(self, name: str, value: np.ndarray | None = None) -> str:
        from onnx import numpy_helper

        array = self.weights[name] if value is None else value
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        from onnx import helper

        domain = attrs.pop("domain", "")
        output = f"{name}_output"
        self.nodes.append(helper.make_node(op, inputs, [output], name, domain=domain, **attrs))
        return output

    def linear(self, x: str, prefix: str) -> str:
        """``x @ W.T + b`` for the torch ``Linear`` at ``prefix`` (weight out x in)."""
        product = self.node(
            "MatMul",
            [x, self.weight(f"{prefix}.weight", self.weights[f"{prefix}.weight"].T)],
            f"{prefix}/MatMul",
        )
        return self.node("Add", [self.weight(f"{prefix}.bias"), product], f"{prefix}/Add")

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        return self.node(
            "LayerNormalization",
            [x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")],
            f"{prefix}/LayerNormalization",
            axis=-1,
            epsilon=eps,
        )


def build_graph(model_dir: Path) -> Any:
    """The mean-pooled encoder of ``model_dir`` as an ``onnx.ModelProto`` (float32):
    inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, batch x
    sequence), output ``embedding`` (float32, batch x hidden, not normalised)."""
    from onnx import TensorProto, helper

    shape = BertShape.read(model_dir)
    check_mean_pooling(model_dir)
    graph = _Graph(load_weights(model_dir))
    int32 = int(TensorProto.INT32)
    ids = graph.node("Cast", ["input_ids"], "input_ids/Cast", to=int32)
    types = graph.node("Cast", ["token_type_ids"], "token_type_ids/Cast", to=int32)
    mask = graph.node("Cast", ["attention_mask"], "attention_mask/Cast", to=int32)
    graph.nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            [
                ids,
                types,
                graph.weight("embeddings.word_embeddings.weight"),
                graph.weight("embeddings.position_embeddings.weight"),
                graph.weight("embeddings.token_type_embeddings.weight"),
                graph.weight("embeddings.LayerNorm.weight"),
                graph.weight("embeddings.LayerNorm.bias"),
                mask,
            ],
            ["embeddings_output", "mask_index"],
            "embeddings/EmbedLayerNormalization",
            domain="com.microsoft",
            epsilon=shape.layer_norm_eps,
        )
    )
    hidden = "embeddings_output"
    for layer in range(shape.num_layers):
        hidden = _encoder_layer(graph, hidden, f"encoder.layer.{layer}", shape)
    graph.nodes.extend(_mean_pooling(graph, hidden))
    dims = ["batch", "sequence"]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, dims)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info(
        "embedding", TensorProto.FLOAT, ["batch", shape.hidden_size]
    )
    model = helper.make_model(
        helper.make_graph(graph.nodes, "bert_mean_pooled", inputs, [output], graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="loragate",
    )
    model.ir_version = 8
    return model


def _encoder_layer(graph: _Graph, x: str, prefix: str, shape: BertShape) -> str:
    weights = graph.weights
    parts = [f"{prefix}.attention.self.{part}" for part in ("query", "key", "value")]
    qkv_weight = np.concatenate([weights[f"{p}.weight"].T for p in parts], axis=1)
    qkv_bias = np.concatenate([weights[f"{p}.bias"] for p in parts])
    attended = graph.node(
        "Attention",
        [
            x,
            graph.weight(f"{prefix}.attention.qkv.weight", qkv_weight),
            graph.weight(f"{prefix}.attention.qkv.bias", qkv_bias),
            "mask_index",
        ],
        f"{prefix}/attention/Attention",
        domain="com.microsoft",
        num_heads=shape.num_heads,
    )
    projected = graph.linear(attended, f"{prefix}.attention.output.dense")
    residual = graph.node("Add", [projected, x], f"{prefix}/attention/residual/Add")
    x = graph.layer_norm(residual, f"{prefix}.attention.output.LayerNorm", shape.layer_norm_eps)
    intermediate = f"{prefix}.intermediate.dense"
    product = graph.node(
        "MatMul",
        [x, graph.weight(f"{intermediate}.weight", weights[f"{intermediate}.weight"].T)],
        f"{intermediate}/MatMul",
    )
    activated = graph.node(
        "BiasGelu",
        [product, graph.weight(f"{intermediate}.bias")],
        f"{intermediate}/BiasGelu",
        domain="com.microsoft",
    )
    output = graph.linear(activated, f"{prefix}.output.dense")
    residual = graph.node("Add", [output, x], f"{prefix}/output/residual/Add")
    return graph.layer_norm(residual, f"{prefix}.output.LayerNorm", shape.layer_norm_eps)


def _mean_pooling(graph: _Graph, hidden: str) -> list[Any]:
    from onnx import TensorProto, helper

    axis = graph.weight("pooling/axis", np.array([1], dtype=np.int64))
    last = graph.weight("pooling/last", np.array([-1], dtype=np.int64))
    floor = graph.weight("pooling/floor", np.array(1e-9, dtype=np.float32))
    return [
        helper.make_node("Unsqueeze", ["attention_mask", last], ["mask_3d"], "pooling/Unsqueeze"),
        helper.make_node("Cast", ["mask_3d"], ["mask_float"], "pooling/Cast", to=TensorProto.FLOAT),
        helper.make_node(
            "ReduceSum", ["mask_float", axis], ["counts"], "pooling/Count", keepdims=0
        ),
        helper.make_node("Clip", ["counts", floor], ["counts_floor"], "pooling/Clip"),
        helper.make_node("Mul", [hidden, "mask_float"], ["masked"], "pooling/Mul"),
        helper.make_node("ReduceSum", ["masked", axis], ["sums"], "pooling/Sum", keepdims=0),
        helper.make_node("Div", ["sums", "counts_floor"], ["embedding"], "pooling/Div"),
    ]
