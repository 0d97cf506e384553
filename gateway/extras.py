"""The optional parts of loragate, the pip extra that installs each, and the error that
names it.

``pip install loragate`` installs the gateway alone: enough for remote mode (the engine
is a pool of ``vllm serve`` replicas), tenants, limits, metrics and tracing. The rest
comes with extras (``docs/deploy.md``, "Install"): the in-process engine (``cpu`` or
``gpu``), retrieval (``rag``), adapter training and the demo kit (``training``),
``loragate compare`` (``compare``). Code that needs one checks for it here first, so a
missing extra reads as the command that installs it instead of an ``ImportError``
trace from deep inside a library.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Extra:
    name: str
    """The pip extra (``loragate[name]``)."""
    purpose: str
    modules: tuple[str, ...]
    """Top-level modules it installs that the part cannot start without."""
    alternative: str | None = None
    """Another extra that provides the same modules (the GPU build of the engine)."""

    def install_command(self) -> str:
        command = f"pip install 'loragate[{self.name}]'"
        if self.alternative is not None:
            command += f" (or 'loragate[{self.alternative}]' on an NVIDIA GPU)"
        return command


ENGINE = Extra("cpu", "the in-process vLLM engine (engine.kind: vllm)", ("vllm",), "gpu")
RAG = Extra("rag", "retrieval (collections, embeddings)", ("faiss", "numpy", "tiktoken", "Stemmer"))
RAG_TORCH = Extra(
    "rag-torch",
    "the embedder minilm and embedder_dir folders (sentence-transformers, beside rag)",
    ("sentence_transformers",),
)
TRAINING = Extra(
    "training", "adapter training and the demo kit", ("torch", "transformers", "peft", "gguf")
)
COMPARE = Extra("compare", "loragate compare", ("openai", "matplotlib", "numpy"))


class MissingExtraError(RuntimeError):
    """A part of loragate was asked for whose extra is not installed."""

    def __init__(self, extra: Extra, missing: list[str]) -> None:
        super().__init__(
            f"{extra.purpose} needs the '{extra.name}' extra, which is not installed here "
            f"(missing: {', '.join(missing)}): {extra.install_command()}"
        )
        self.extra = extra
        self.missing = missing


def missing_modules(extra: Extra) -> list[str]:
    """The modules of ``extra`` that cannot be found (found without importing them)."""
    return [name for name in extra.modules if importlib.util.find_spec(name) is None]


def require(extra: Extra) -> None:
    """Raise ``MissingExtraError`` unless every module of ``extra`` is installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(extra, missing)
