"""``PromptRenderer``: chat messages and completion prompts to token ids.

The gateway tokenizes once, itself: it needs the count before admission (context
checks, later rate limits) and hands the engine token ids, so nothing is tokenized
twice.

Text from clients and documents reaches the model as text. A chat template is
rendered to a string and tokenized; tokenized naively, a message containing
``<|im_end|>\\n<|im_start|>system`` would become real control tokens and forge a turn
(a system turn after the tenant's policy, say). Only the template may emit control
(special) tokens: message contents are tokenized with special-token parsing off.
"""

from __future__ import annotations

import copy
import itertools
import re
import secrets
from pathlib import Path
from typing import Any

import jinja2

from gateway.errors import InvalidRequestError
from gateway.model_io.model_tokenizer import FolderTokenizer


class PromptRenderer:
    """Wraps the base model's tokenizer and chat template: a ``FolderTokenizer`` read
    from the model folder, or any Hugging Face fast tokenizer (``transformers``' own
    objects have the same methods; tests hand some in). Safe to
    call from several threads at once (prompts are rendered in threads): its only state
    is a cache of plain dict operations.

    ``chat`` renders the template with the real contents (what the template makes of
    them, its filters included) and knows the template's own special tokens for the
    conversation's shape: those of a rendering with each content replaced by a random
    placeholder, worked out once per shape. When no content holds the text of a special
    token and the real rendering's special tokens are exactly the template's own, the
    real rendering's ids are used: they are the ids a plain tokenization gives.
    Otherwise the placeholder rendering is cut at the template's special tokens and
    each run of text between them, contents put back in, is tokenized as text, so a
    content's ``<|im_end|>`` stays the characters ``<|im_end|>``. The contents then go
    in as sent (a template filter such as ``| trim`` is not applied to them).

    Encoding goes through two private copies of the Rust tokenizer, one that parses
    special tokens and one that does not, each set once: Hugging Face's per-call
    ``split_special_tokens`` flips a flag on the one shared tokenizer, and under
    concurrent calls another thread's setting applies (seen in tests: client text
    parsed as control tokens).
    """

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError("PromptRenderer needs a fast (Rust) Hugging Face tokenizer")
        self._tokenizer = tokenizer
        # Placeholder nonces: a secret prefix (clients never see a rendering with
        # placeholders, so they cannot write one) and a counter, instead of a system
        # call for fresh random bytes on every request.
        self._nonce_prefix = secrets.token_hex(16)
        self._nonces = itertools.count()
        # Shape of a conversation -> the template's own special tokens (see
        # ``_template_specials``); plain dict operations, safe across threads.
        self._specials_by_shape: dict[tuple[object, ...], tuple[int, ...]] = {}
        self._parsing = copy.deepcopy(backend)
        self._parsing.encode_special_tokens = False
        self._literal = copy.deepcopy(backend)
        self._literal.encode_special_tokens = True
        added = tokenizer.added_tokens_decoder.values()
        self._special_texts = tuple(t.content for t in added if t.special)
        self._special_ids = frozenset(tokenizer.convert_tokens_to_ids(list(self._special_texts)))
        # A byte-level token's string has one character per byte it stands for, so its
        # length bounds the characters it decodes to (other tokenizers: its characters).
        self._max_token_chars = max(len(t) for t in backend.get_vocab(with_added_tokens=True))

    @classmethod
    def from_model_dir(cls, path: Path) -> PromptRenderer:
        """The tokenizer and chat template of the model folder ``path``, read without
        ``transformers`` (``FolderTokenizer``: the same ids as its ``AutoTokenizer``)."""
        return cls(FolderTokenizer.from_dir(path))

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered with the chat template, plus the
        generation prompt. Special tokens come from the template only."""
        contents = [m.get("content") or "" for m in messages]
        if not any(s in c for c in contents for s in self._special_texts):
            ids = self._encode(self._render(messages), parse_special=True)
            specials = tuple(t for t in ids if t in self._special_ids)
            if specials == self._template_specials(messages):
                return ids
        nonce = self._nonce()
        rendered = self._render(_with_placeholders(messages, contents, nonce))
        encoding = _encoding(self._parsing, rendered)
        runs = _split_at_specials(rendered, encoding.ids, encoding.offsets, self._special_ids)
        placeholder = re.compile(rf"@{nonce}:(\d+)@")
        ids = []
        for run in runs:
            if isinstance(run, int):
                ids.append(run)
            else:
                text = placeholder.sub(lambda m: contents[int(m.group(1))], run)
                ids.extend(self._encode(text, parse_special=False))
        return ids

    def _template_specials(self, messages: list[dict[str, str]]) -> tuple[int, ...]:
        """The special tokens the template itself puts around these messages: those of
        the rendering with every content replaced by a placeholder. They depend on the
        messages' shape only (roles, other fields, which contents are empty), never on
        the nonce, so they are kept per shape: one rendering and one encoding fewer per
        request for the conversations a gateway sees again and again."""
        shape = _shape(messages)
        if shape is None:  # a field that cannot be a key: work it out
            return self._placeholder_specials(messages)
        cached = self._specials_by_shape.get(shape)
        if cached is None:
            cached = self._placeholder_specials(messages)
            if len(self._specials_by_shape) >= SHAPES_KEPT:
                self._specials_by_shape.clear()
            self._specials_by_shape[shape] = cached
        return cached

    def _placeholder_specials(self, messages: list[dict[str, str]]) -> tuple[int, ...]:
        contents = [m.get("content") or "" for m in messages]
        rendered = self._render(_with_placeholders(messages, contents, self._nonce()))
        ids = _encoding(self._parsing, rendered).ids
        return tuple(t for t in ids if t in self._special_ids)

    def _nonce(self) -> str:
        return f"{self._nonce_prefix}{next(self._nonces)}"

    def text(self, prompt: str) -> list[int]:
        """Token ids of a raw completion prompt, special tokens parsed (as vLLM's own
        server does for ``/v1/completions``): a raw prompt is the whole model input,
        its author writes the control tokens. Tenants under a system-prompt policy are
        refused raw completions, so no policy can be escaped this way."""
        return self._encode(prompt, parse_special=True)

    def count(self, text: str) -> int:
        """Tokens of ``text`` as text (retrieved sources, messages): special-token
        strings in it count as the characters they are, as ``chat`` encodes them."""
        return len(self._encode(text, parse_special=False))

    def decode(self, token_ids: list[int]) -> str:
        return str(self._tokenizer.decode(token_ids))

    @property
    def tokenizer(self) -> Any:
        """The tokenizer handed in (its chat template and vocabulary); the renderer
        encodes with its own copies of the Rust tokenizer, not through this object."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)

    def _render(self, messages: list[dict[str, str]]) -> str:
        try:
            return str(
                self._tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
            )
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            # ChatTemplateError (a ValueError) from FolderTokenizer; Jinja's own errors
            # from a transformers tokenizer's template.
            raise InvalidRequestError(
                f"The messages cannot be rendered with this model's chat template: {exc}",
                param="messages",
            ) from exc

    def _encode(self, text: str, *, parse_special: bool) -> list[int]:
        backend = self._parsing if parse_special else self._literal
        return list(_encoding(backend, text).ids)

    @property
    def max_token_chars(self) -> int:
        """The most characters one token can stand for: a prompt longer than the context
        times this cannot fit, whatever it says (refused before it is tokenized)."""
        return self._max_token_chars


GIL_FREE_CHARS = 4096
"""Texts this long are encoded with ``encode_batch``: ``Tokenizer.encode`` holds the GIL
for the whole call (a 1.9 MB prompt stalled every other request for 0.8 s, even from a
worker thread), ``encode_batch`` releases it. Shorter ones: ``encode`` is cheaper."""


def _encoding(backend: Any, text: str) -> Any:
    if len(text) < GIL_FREE_CHARS:
        return backend.encode(text, add_special_tokens=False)
    return backend.encode_batch([text], add_special_tokens=False)[0]


SHAPES_KEPT = 4096
"""Conversation shapes whose template special tokens are kept (then the cache restarts)."""

_FILLED = object()
"""Stands for a non-empty content in a conversation's shape."""


def _shape(messages: list[dict[str, str]]) -> tuple[object, ...] | None:
    """Everything the template sees except the contents' text; None if unhashable."""
    shape = tuple(
        tuple((k, _FILLED if k == "content" and v else v) for k, v in m.items()) for m in messages
    )
    try:
        hash(shape)
    except TypeError:
        return None
    return shape


def _with_placeholders(
    messages: list[dict[str, str]], contents: list[str], nonce: str
) -> list[dict[str, str]]:
    return [
        {**m, "content": f"@{nonce}:{i}@"} if contents[i] else m for i, m in enumerate(messages)
    ]


def _split_at_specials(
    text: str, ids: list[int], offsets: list[tuple[int, int]], special_ids: frozenset[int]
) -> list[str | int]:
    """``text`` as runs of plain text and the special token ids between them (found
    by the tokenizer itself, so its own matching rules apply)."""
    runs: list[str | int] = []
    pos = 0
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        if token_id not in special_ids:
            continue
        if start > pos:
            runs.append(text[pos:start])
        runs.append(token_id)
        pos = end
    if pos < len(text):
        runs.append(text[pos:])
    return runs
