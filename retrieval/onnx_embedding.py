"""A sentence-transformers BERT model run by ONNX Runtime, int8, batched by length.

The ONNX file is made *locally* from the model's own weights (nothing is downloaded,
no torch): on first use ``retrieval.bert_onnx`` writes the encoder as an ONNX graph
straight from ``model.safetensors``, each layer's attention and its bias + GELU already
single operators (residual adds and layer norms stay apart: the fused CPU kernel is
slower), mean pooling inside the graph; weights are quantized to int8 with dynamic
quantization, and the result is cached (``cache_dir``, default ``~/.cache/loragate/onnx``)
under a name that holds a digest of the weights, so a changed model is exported again
(``LORAGATE_ONNX_CACHE`` moves the cache).
Export needs ``onnx`` and ``onnxruntime`` (a few seconds); running needs only
``onnxruntime`` and ``tokenizers``.

Texts are sorted by length and cut into small batches of similar lengths, each padded
only to its longest text (with sentence-transformers' order most of a batch is padding).
The batches run side by side, one per allowed core, each on one thread: for a model this
small, splitting every operator across cores costs more in hand-offs than it gains
(measured on 1,123 manual chunks, 2 cores: 32.2 chunks per CPU-second in batches of 8
this way, 30.3 with both threads on each batch of 32). Dynamic int8 quantizes each
batch's activations with one scale, so a text's vector moves slightly with its
batch-mates (cosine > 0.999 to the same text embedded alone).

Concurrency: an ``InferenceSession`` may be run from several threads at once and the
tokenizer is thread-safe, so ``embed_query`` never waits for an ingest batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.embedding import normalize_rows
from retrieval.tokens import ChunkTokenizer, HuggingFaceTokenizer

EXPORT_VERSION = 4
"""Bump when the exported graph changes (cached files of older versions are ignored).
2: only MatMul weights quantized, per output channel (whole-graph per-tensor int8 put
MiniLM at cosine 0.948 mean / 0.883 min to the float model on PostgreSQL manual chunks;
this at 0.993 / 0.955).
3: eager attention exported and fused (Attention, SkipLayerNormalization, BiasGelu)
before quantizing; the attention projections are int8 too (QAttention). sdpa's exported
mask (Where, IsNaN: 18% of the run time) is gone; 1.37x the chunks per second of 2 at the
same batching, cosine to the float model 0.9940 mean / 0.9812 min on 300 manual chunks.
4: each residual Add and layer norm stay two operators (no SkipLayerNormalization, here or
in the session: see ``DISABLED_OPTIMIZERS``); 1.15x the chunks per second of 3, cosine
to the float model 0.9933 mean for both, 0.9775 min against 0.9778 on 1,123 manual chunks."""

DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
"""ONNX Runtime's CPU ``SkipLayerNormalization`` is a scalar loop with a division per
element: 11-12% of the int8 MiniLM's run time, against 3% for the ``Add`` and the
vectorized ``LayerNormalization`` it replaces (per-operator profile, 200 manual chunks)."""


CACHE_ENV = "LORAGATE_ONNX_CACHE"
"""Names the folder of the exported graphs (an image writes them at build time there, out
of a home folder that a read-only pod replaces with an empty volume)."""


def default_cache_dir() -> Path:
    """``$LORAGATE_ONNX_CACHE``, else ``$XDG_CACHE_HOME/loragate/onnx`` (``~/.cache``)."""
    if folder := os.environ.get(CACHE_ENV):
        return Path(folder)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loragate" / "onnx"


def _weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256(f"v{EXPORT_VERSION}".encode())
    for name in ("model.safetensors", "pytorch_model.bin", "config.json"):
        path = model_dir / name
        if path.is_file():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    return digest.hexdigest()[:12]


def export_int8(model_dir: Path, target: Path) -> None:
    """Write the model's mean-pooled int8 ONNX graph to ``target`` (atomically)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from retrieval.bert_onnx import build_graph

    graph = build_graph(model_dir)  # fused float32 graph, from the safetensors weights
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fused = Path(scratch) / "model-fused.onnx"
        onnx.save(graph, str(fused))
        quantized = Path(scratch) / "model-int8.onnx"
        quantize_dynamic(
            str(fused),
            str(quantized),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            # the fused operators are Microsoft's: shape inference cannot type their outputs
            extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )
        os.replace(quantized, target)  # atomic: a concurrent reader sees all or nothing


class OnnxEmbedder:
    """all-MiniLM-L6-v2 (or another BERT-style sentence-transformers folder) on ONNX
    Runtime, int8. ``name`` defaults to the folder's model name plus ``-int8``: its
    vectors differ slightly from the float model's, so collections are not mixed.
    ``session`` runs the graph (anything with ``InferenceSession.run``); by default an
    ONNX Runtime session on ``onnx_path`` (``open_session``)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        name: str | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        batch_size: int = 8,
        query_prefix: str = "",
        document_prefix: str = "",
        session: Any = None,
    ) -> None:
        from tokenizers import Tokenizer

        from retrieval.embedding import BUNDLED_MODEL_NAME, bundled_model_dir

        path = Path(model_dir) if model_dir is not None else bundled_model_dir()
        if not path.is_dir():
            raise FileNotFoundError(f"embedding model directory not found: {path}")
        self.model_dir = path
        base = BUNDLED_MODEL_NAME if model_dir is None else path.name
        self.name = name or f"{base}-int8"
        self.max_seq_length = _max_seq_length(path)
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.onnx_path = cache / f"{base}-{_weights_digest(path)}-int8.onnx"
        if not self.onnx_path.is_file():
            export_int8(path, self.onnx_path)
        self._session = session if session is not None else open_session(self.onnx_path)
        self.workers = threads or min(len(os.sched_getaffinity(0)), 8)
        # ONNX Runtime releases the GIL while it runs, so threads give real parallelism
        # (the executor starts its threads on first use)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-embed")
        self._tokenizer_json = (path / "tokenizer.json").read_text(encoding="utf-8")
        self._tokenizer = Tokenizer.from_str(self._tokenizer_json)
        self._tokenizer.enable_truncation(self.max_seq_length)
        self._tokenizer.no_padding()
        self.dimension = int(self._embed_batch([self._tokenizer.encode("").ids])[0].shape[0])
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix

    def chunk_tokenizer(self) -> ChunkTokenizer:
        """The model's word-pieces, limited to what it reads ([CLS] and [SEP] excluded)."""
        return HuggingFaceTokenizer.from_json(
            self._tokenizer_json, f"wp:{self.name}", self.max_seq_length - 2
        )

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.document_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self._encode([self.query_prefix + text])[0]
        return vector

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        ids = [e.ids for e in self._tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        batches = [order[s : s + self.batch_size] for s in range(0, len(order), self.batch_size)]
        vectors = np.zeros((len(ids), self.dimension), dtype=np.float32)
        feeds = ([ids[i] for i in batch] for batch in batches)
        if len(batches) > 1 and self.workers > 1:
            outputs = self._pool.map(self._embed_batch, feeds)
        else:
            outputs = map(self._embed_batch, feeds)
        for batch, output in zip(batches, outputs, strict=True):
            vectors[batch] = output
        return normalize_rows(vectors)

    def _embed_batch(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(row) for row in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, row in enumerate(batch):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        (output,) = self._session.run(["embedding"], feeds)
        return np.asarray(output, dtype=np.float32)


def open_session(path: Path, options: Any = None) -> Any:
    """An ONNX Runtime CPU session for an exported embedder (``options`` defaults to
    :func:`session_options`), without the fusions in :data:`DISABLED_OPTIMIZERS`."""
    import onnxruntime

    return onnxruntime.InferenceSession(
        str(path),
        options or session_options(),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(DISABLED_OPTIMIZERS),
    )


def session_options() -> Any:
    """ONNX Runtime options for embedding next to other work on few cores.

    Each run on its caller's thread alone (the embedder runs one batch per allowed core
    side by side instead), all graph optimizations, and no spin-waiting: ORT's idle
    workers otherwise spin between the many small ops of a BERT layer, which on two
    cores shared with the engine burns the CPU the other threads need (measured on 145
    manual chunks, 2 busy cores: 14.7 chunks per CPU-second spinning, 22.9 without).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _max_seq_length(model_dir: Path) -> int:
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if value:
            return int(value)
    return 512
