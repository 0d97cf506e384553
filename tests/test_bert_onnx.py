"""MiniLM's ONNX graph written from its weights (``retrieval.bert_onnx``, no torch) gives
the sentence-transformers model's embeddings: float32 to rounding, int8 as close as
dynamic quantization allows.

The reference is all-MiniLM-L6-v2 on sentence-transformers (the ``rag-torch`` extra,
in the dev extra). Loading it (torch) and the 90 MB float graph takes 6-20 s on 2
cores, with the load: the claim is about the real model's weights, which a tiny random
BERT cannot stand in for (``tests/test_retrieval_onnx.py`` covers export, cache and
batching on one; the export without torch is checked on one written with numpy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from retrieval.bert_onnx import UnsupportedModelError, build_graph
from retrieval.embedding import bundled_model_dir, normalize_rows
from retrieval.onnx_embedding import OnnxEmbedder, open_session

pytestmark = pytest.mark.integration  # runs MiniLM (ONNX, sentence-transformers); a subprocess

TEXTS = [
    "How do I reset the admin password of the router?",
    "VACUUM FULL rewrites the whole table into a new file and takes an exclusive lock, "
    "so nothing can read or write the table while it runs. " * 3,
    "Wie setze ich das Passwort zurück?",
    "pg_restore -j 4 restores a custom-format dump with four jobs.",
    "",
    "Firmware updates are uploaded on the maintenance page.",
]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The sentence-transformers model's unit vectors of ``TEXTS``."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(
        str(bundled_model_dir()), device="cpu", local_files_only=True
    )
    vectors = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)


def run_graph(session: Any, texts: list[str]) -> np.ndarray:
    """The graph's unit vectors of ``texts``, embedded as one padded batch."""
    embedder_tokenizer = OnnxTokens()
    ids = [embedder_tokenizer.encode(text) for text in texts]
    width = max(len(row) for row in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    feeds = {
        "input_ids": input_ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(input_ids),
    }
    (output,) = session.run(["embedding"], feeds)
    return normalize_rows(output)


class OnnxTokens:
    """MiniLM's word-pieces as the int8 embedder feeds them (256 at most, no padding)."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(bundled_model_dir() / "tokenizer.json"))
        self.tokenizer.enable_truncation(256)
        self.tokenizer.no_padding()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)


def test_the_float_graph_gives_the_sentence_transformers_vectors(
    reference: np.ndarray, tmp_path: Path
) -> None:
    import onnx

    path = tmp_path / "minilm-float.onnx"
    onnx.save(build_graph(bundled_model_dir()), str(path))

    # one batch padded to the longest text: the mask must keep padding out of the mean
    vectors = run_graph(open_session(path), TEXTS)

    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() > 0.99999, cosines
    assert np.abs(vectors - reference).max() < 1e-4


def test_the_int8_embedder_stays_close_to_the_float_model(reference: np.ndarray) -> None:
    """Dynamic int8 moves vectors a little (0.993 mean cosine over 1,123 manual chunks,
    ``retrieval/onnx_embedding.py``); a wrong weight layout falls far below. The graph
    comes from the user's cache (written once, as a gateway does)."""
    embedder = OnnxEmbedder(threads=1)

    vectors = embedder.embed_documents(TEXTS)

    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.mean() > 0.99 and cosines.min() > 0.97, cosines
    assert embedder.name == "all-MiniLM-L6-v2-int8" and embedder.dimension == 384


def copy_model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), folder)
    return folder


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("hidden_act", "relu", "hidden_act 'relu'"),
        ("position_embedding_type", "relative_key", "position_embedding_type"),
        ("model_type", "roberta", "model_type 'roberta'"),
    ],
)
def test_a_config_the_graph_cannot_express_is_refused(
    tmp_path: Path, key: str, value: str, named: str
) -> None:
    folder = copy_model(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {key: value}))

    with pytest.raises(UnsupportedModelError, match=named):
        build_graph(folder)


def test_cls_pooling_and_missing_safetensors_are_refused(tmp_path: Path) -> None:
    folder = copy_model(tmp_path)
    pooling = folder / "1_Pooling" / "config.json"
    settings = json.loads(pooling.read_text())
    pooling.write_text(
        json.dumps(settings | {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    )
    with pytest.raises(UnsupportedModelError, match="only mean pooling"):
        build_graph(folder)

    pooling.write_text(json.dumps(settings))
    (folder / "model.safetensors").unlink()
    with pytest.raises(UnsupportedModelError, match=r"no model\.safetensors"):
        build_graph(folder)


def test_the_graph_cache_follows_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from retrieval.onnx_embedding import CACHE_ENV, default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert default_cache_dir() == tmp_path / "xdg" / "loragate" / "onnx"

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "image"))
    assert default_cache_dir() == tmp_path / "image"


EXPORT_PROBE = r"""
import json, sys
from pathlib import Path
from retrieval.onnx_embedding import OnnxEmbedder
from tests.support.tiny_bert import write_tiny_bert

folder = write_tiny_bert(Path(sys.argv[1]) / "tiny-bert")
embedder = OnnxEmbedder(folder, cache_dir=Path(sys.argv[1]) / "cache", threads=1)
vectors = embedder.embed_documents(["reset the router", "firmware"])
heavy = [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]
print(json.dumps({"shape": list(vectors.shape), "heavy": heavy,
                  "files": [p.name for p in (Path(sys.argv[1]) / "cache").iterdir()]}))
"""


def test_the_int8_graph_is_written_without_torch(tmp_path: Path) -> None:
    """In a fresh interpreter (this one holds torch already): the graph of a tiny BERT
    written with numpy is built, quantized and run, and nothing imports torch,
    transformers or sentence-transformers."""
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["heavy"] == [] and answer["shape"] == [2, 32], answer
    (written,) = answer["files"]
    assert written.startswith("tiny-bert-") and written.endswith("-int8.onnx")
