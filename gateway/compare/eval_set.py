"""The eval set: one JSON object per line, what a correct answer must (not) say.

```json
{"id": "reset-en", "lang": "en", "question": "How do I factory reset the BP-300?",
 "facts": [["15 seconds", "15 s"], ["three beeps", "3 beeps"]],
 "source": "brewpilot/en/troubleshooting.md",
 "style": {"marker": "Arr, matey!"}, "must_not": ["vinegar"]}
```

- ``question`` (one user turn) or ``messages`` (a whole conversation, OpenAI's shape).
- ``facts``: groups of alternatives; a correct answer matches one alternative of every
  group (case- and accent-insensitive, see ``gateway.compare.scoring``). A bare string
  is a group of one.
- ``source``: the document (or documents, any of them) a citation should point at, as
  the gateway reports it (``citations[].source``).
- ``style``: ``{"marker": TEXT}`` (a persona marker: the answer starts with it) or
  ``{"regex": PATTERN}`` (searched in the answer).
- ``must_not``: strings whose presence makes an answer wrong.

Errors name the file and line (``eval.jsonl:12: facts.0: ...``), every bad line at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_ERRORS_SHOWN = 20


class EvalFileError(ValueError):
    """An eval set or variants file is unusable; ``errors`` are ``where: what`` lines."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        shown = errors[:MAX_ERRORS_SHOWN]
        more = len(errors) - len(shown)
        text = "\n".join(f"  {e}" for e in shown) + (f"\n  ... and {more} more" if more else "")
        super().__init__(f"{path}: {len(errors)} error(s)\n{text}")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class StyleCheck(BaseModel):
    """Exactly one of ``marker`` (the answer starts with it, ignoring leading spaces,
    case and accents) or ``regex`` (Python syntax, searched anywhere in the answer)."""

    model_config = ConfigDict(extra="forbid")

    marker: str | None = Field(default=None, min_length=1)
    regex: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> StyleCheck:
        if (self.marker is None) == (self.regex is None):
            raise ValueError("give exactly one of 'marker' or 'regex'")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
        return self


class EvalItem(BaseModel):
    """One question (or conversation) and what its answer is checked for."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    lang: str = Field(min_length=2, max_length=16)
    question: str | None = Field(default=None, min_length=1)
    messages: list[Message] | None = Field(default=None, min_length=1)
    facts: list[list[str]] = Field(default_factory=list)
    source: list[str] = Field(default_factory=list)
    style: StyleCheck | None = None
    must_not: list[str] = Field(default_factory=list)

    @field_validator("facts", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        # A bare string is a group with one alternative: ["15 s", ["3 beeps", "three"]].
        if isinstance(value, list):
            return [[v] if isinstance(v, str) else v for v in value]
        return value

    @field_validator("source", mode="before")
    @classmethod
    def _sources(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("facts")
    @classmethod
    def _non_empty_groups(cls, value: list[list[str]]) -> list[list[str]]:
        for i, group in enumerate(value):
            if not group or any(not alt.strip() for alt in group):
                raise ValueError(f"group {i} must hold at least one non-blank alternative")
        return value

    @model_validator(mode="after")
    def _well_formed(self) -> EvalItem:
        if (self.question is None) == (self.messages is None):
            raise ValueError("give exactly one of 'question' or 'messages'")
        if self.messages is not None and self.messages[-1].role != "user":
            raise ValueError("the conversation must end with a user message")
        if not (self.facts or self.style or self.must_not):
            raise ValueError("the item checks nothing: give facts, style or must_not")
        if self.source and not self.facts:
            raise ValueError("'source' needs 'facts' (a citation must contain the fact)")
        return self

    def conversation(self) -> list[dict[str, str]]:
        """The messages to send, without any system prompt (variants add theirs)."""
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        assert self.question is not None
        return [{"role": "user", "content": self.question}]

    def query(self) -> str:
        """The last user turn: what the gateway's retrieval searches for."""
        return self.conversation()[-1]["content"]


def load_eval_set(path: Path) -> list[EvalItem]:
    """Every item of ``path``; raises ``EvalFileError`` listing each bad line (blank
    lines and lines starting with ``#`` are skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalFileError(Path(path), [f"cannot read: {exc}"]) from None
    items: list[EvalItem] = []
    errors: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: not JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(data, dict):
            errors.append(f"{where}: expected a JSON object, got {type(data).__name__}")
            continue
        try:
            item = EvalItem.model_validate(data)
        except ValidationError as exc:
            errors.extend(f"{where}: {e}" for e in describe_errors(exc))
            continue
        if item.id in first_line:
            errors.append(f"{where}: id {item.id!r} repeats line {first_line[item.id]}")
            continue
        first_line[item.id] = number
        items.append(item)
    if not items and not errors:
        errors.append("no items")
    if errors:
        raise EvalFileError(Path(path), errors)
    return items


def describe_errors(exc: ValidationError) -> list[str]:
    """``field.path: message`` for each of pydantic's errors (the value is not echoed)."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{loc}: {message}" if loc else message)
    return lines
