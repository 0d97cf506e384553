"""Chat dataset lines for the training tests."""

from __future__ import annotations

import json


def chat_line(question: str, answer: str, system: str | None = None) -> str:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return json.dumps({"messages": messages})


# --- dataset validation -------------------------------------------------------------

GOOD = chat_line("Hi?", "Hello.")
