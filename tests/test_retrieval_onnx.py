"""The ONNX Runtime int8 embedder: local export, cache, batching by length, chunk sizing.

A tiny randomly initialised BERT (2 layers, 32 dims) with MiniLM's real tokenizer keeps
the export to a few seconds; the export, quantization and inference code are the real
ones. The real MiniLM's int8 quality is measured in ``retrieval/bench/multilingual.py``.
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from retrieval.embedding import bundled_model_dir
from retrieval.onnx_embedding import OnnxEmbedder, open_session

pytestmark = pytest.mark.integration  # builds and runs a BERT model (torch, ONNX)

TEXTS = [
    "short",
    "A much longer text about restoring PostgreSQL dumps with pg_restore and its options, "
    "repeated to make it long. " * 4,
    "Medium length text about VACUUM FULL and its locks.",
    "",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).eval().save_pretrained(directory)
    shutil.copy(bundled_model_dir() / "tokenizer.json", directory / "tokenizer.json")
    (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return directory


@pytest.fixture(scope="module")
def embedder(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    return OnnxEmbedder(tiny_model, cache_dir=tmp_path_factory.mktemp("cache"), batch_size=2)


def reference(model_dir: Path, text: str) -> np.ndarray:
    """Mean-pooled float output of the same weights in transformers."""
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(64)
    tokenizer.no_padding()  # the bundled tokenizer.json pads to 128
    ids = torch.tensor([tokenizer.encode(text).ids])
    with torch.no_grad():
        hidden = BertModel.from_pretrained(str(model_dir)).eval()(input_ids=ids).last_hidden_state
    vector = hidden.mean(1)[0].numpy()
    return vector / np.linalg.norm(vector)


def test_int8_vectors_match_the_float_model(embedder: OnnxEmbedder, tiny_model: Path) -> None:
    vectors = embedder.embed_documents(TEXTS[:3])

    assert vectors.shape == (3, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for text, vector in zip(TEXTS[:3], vectors, strict=True):
        assert float(vector @ reference(tiny_model, text)) > 0.98


def test_batching_by_length_keeps_the_input_order(embedder: OnnxEmbedder) -> None:
    together = embedder.embed_documents(TEXTS)
    alone = np.stack([embedder.embed_documents([t])[0] for t in TEXTS])

    # dynamic int8 scales activations per batch, so batch-mates move vectors slightly;
    # a text paired with another text's vector would be far off
    assert np.all(np.sum(together * alone, axis=1) > 0.999)
    assert float(embedder.embed_query(TEXTS[2]) @ alone[2]) > 0.999
    assert embedder.embed_documents([]).shape == (0, 32)


def test_the_export_is_cached_and_reused(tiny_model: Path, embedder: OnnxEmbedder) -> None:
    stamp = embedder.onnx_path.stat().st_mtime_ns
    again = OnnxEmbedder(tiny_model, cache_dir=embedder.onnx_path.parent)

    assert again.onnx_path == embedder.onnx_path
    assert again.onnx_path.stat().st_mtime_ns == stamp
    assert again.name == f"{tiny_model.name}-int8"


def test_chunk_tokenizer_is_capped_at_what_the_model_reads(embedder: OnnxEmbedder) -> None:
    tokenizer = embedder.chunk_tokenizer()

    assert tokenizer.max_tokens == 62
    starts = tokenizer.token_starts("pg_restore restores")
    assert starts == sorted(starts) and len(starts) >= 3


def test_unknown_embedder_names_are_refused() -> None:
    from retrieval.embedding import embedder_from_name

    with pytest.raises(ValueError, match="minilm-int8"):
        embedder_from_name("e5-large")


def test_batches_run_one_per_allowed_core_each_on_one_thread_without_spinning(
    embedder: OnnxEmbedder,
) -> None:
    import os

    from retrieval.onnx_embedding import session_options

    options = session_options()

    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert embedder.workers == min(len(os.sched_getaffinity(0)), 8)


def test_batches_run_side_by_side_give_the_vectors_of_one_batch_after_another(
    tiny_model: Path, embedder: OnnxEmbedder
) -> None:
    texts = [f"{TEXTS[1][: 7 * k]} number {k}" for k in range(1, 23)]
    serial = OnnxEmbedder(tiny_model, cache_dir=embedder.onnx_path.parent, threads=1, batch_size=2)
    threads: set[str] = set()
    together = threading.Barrier(2, timeout=10)  # one batch after another breaks it
    calls = itertools.count()

    class RecordingSession:
        """The real session; notes each batch's thread once ``armed``."""

        armed = False

        def __init__(self) -> None:
            self.inner = open_session(embedder.onnx_path)

        def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
            if self.armed:
                threads.add(threading.current_thread().name)
                if next(calls) < 2:
                    together.wait()  # the first two batches must run at the same time
            return self.inner.run(names, feeds)

    session = RecordingSession()
    parallel = OnnxEmbedder(
        tiny_model, cache_dir=embedder.onnx_path.parent, threads=4, batch_size=2, session=session
    )
    session.armed = True  # (the constructor ran one batch to learn the dimension)

    assert np.array_equal(parallel.embed_documents(texts), serial.embed_documents(texts))
    assert len(threads) > 1 and all(name.startswith("onnx-embed") for name in threads)


def test_the_export_fuses_attention_before_quantizing(embedder: OnnxEmbedder) -> None:
    import onnx

    graph = onnx.load(str(embedder.onnx_path)).graph
    kinds = {node.op_type for node in graph.node}

    # one fused, int8 attention per layer; no sdpa mask left (Where ran 15% of the time)
    assert sum(node.op_type == "QAttention" for node in graph.node) == 2
    assert "Where" not in kinds


def test_residual_adds_and_layer_norms_stay_apart_in_the_session(
    embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    """ONNX Runtime's CPU SkipLayerNormalization is a scalar loop (11% of MiniLM's time,
    against 3% for Add + LayerNormalization): neither the export nor the session fuses it."""
    import onnx

    from retrieval.onnx_embedding import session_options

    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "as-run.onnx")
    open_session(embedder.onnx_path, options)
    as_run = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]

    assert "SkipLayerNormalization" not in as_run
    assert as_run.count("LayerNormalization") == 4  # after attention and after the MLP, per layer
    assert as_run.count("QAttention") == 2
