"""``PromptRenderer``: chat messages and completion prompts to token ids.

The gateway tokenizes once, itself: it needs the count before admission (context
checks, later rate limits) and hands the engine token ids, so nothing is tokenized
twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.errors import InvalidRequestError


class PromptRenderer:
    """Wraps the base model's Hugging Face tokenizer and chat template. Stateless."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def from_model_dir(cls, path: Path) -> PromptRenderer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(path)))

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        try:
            text = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # jinja errors raised by the model's own template
            raise InvalidRequestError(
                f"The messages cannot be rendered with this model's chat template: {exc}",
                param="messages",
            ) from exc
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def text(self, prompt: str) -> list[int]:
        return list(self._tokenizer.encode(prompt, add_special_tokens=False))

    def count(self, text: str) -> int:
        return len(self.text(text))

    def decode(self, token_ids: list[int]) -> str:
        return str(self._tokenizer.decode(token_ids))

    @property
    def vocab_size(self) -> int:
        return len(self._tokenizer)
