"""Turn a chat into token ids and labels that teach only the assistant's turns.

The conversation is rendered with the tokenizer's own chat template, exactly as the
serving engine renders a prompt, and cut into segments: the text the model is given
(system and user turns, role headers, the generation prompt) gets the label
``IGNORE_INDEX``; each assistant reply, with the end-of-turn marker that follows it,
is learned. Segments are found by rendering growing prefixes of the conversation, so
any template whose rendering of a prefix is a prefix of the full rendering works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


class ChatEncodingError(ValueError):
    """A conversation cannot be encoded for training with this tokenizer."""


@dataclass(frozen=True)
class EncodedChat:
    """Token ids and labels of one conversation (``labels[i]`` is ``IGNORE_INDEX`` or the id)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode_chat(
    tokenizer: Any, messages: Sequence[dict[str, str]], *, max_length: int
) -> EncodedChat:
    """Encode ``messages`` (already validated) for supervised training.

    Sequences longer than ``max_length`` are cut at the end; a conversation with no
    learned token left after the cut is an error.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ChatEncodingError("the tokenizer has no chat template")
    full = _render(tokenizer, messages, generation_prompt=False)
    segments: list[tuple[str, bool]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:index], generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not (full.startswith(through) and through.startswith(prompt) and len(prompt) >= cursor):
            raise ChatEncodingError(
                "the chat template does not render conversations prefix by prefix, so "
                "assistant turns cannot be located"
            )
        segments.append((full[cursor : len(prompt)], False))
        segments.append((full[len(prompt) : len(through)], True))
        cursor = len(through)
    segments.append((full[cursor:], False))

    input_ids: list[int] = []
    labels: list[int] = []
    for text, learned in segments:
        if not text:
            continue
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if learned else [IGNORE_INDEX] * len(ids))
    encoded = EncodedChat(tuple(input_ids[:max_length]), tuple(labels[:max_length]))
    if encoded.trained_tokens == 0:
        raise ChatEncodingError(
            f"no assistant token within the first {max_length} tokens (the prompt is too long)"
        )
    return encoded


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], *, generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )
    if not isinstance(text, str):
        raise ChatEncodingError("the chat template did not render to text")
    return text
