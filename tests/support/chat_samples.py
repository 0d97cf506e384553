"""Ordinary chat conversations (languages, markup, blank lines) for prompt rendering tests."""

from __future__ import annotations

ORDINARY = [
    [{"role": "user", "content": "Hello"}],
    [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "La capitale de la France est Paris."},
        {"role": "user", "content": "Et de l'Italie ?"},
    ],
    [{"role": "user", "content": "\n\n  indented, then blank lines  \n\n"}],
    [
        {"role": "user", "content": "Code: <div class='x'>1 < 2 && 3 > 2</div>\n```py\nx=1\n```"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Ünïcödé 日本語 🙂 and digits 1234567890"},
    ],
    [{"role": "system", "content": "Cite sources as [1]."}, {"role": "user", "content": " x "}],
]
