"""Chat datasets for LoRA training: one JSON object per line (JSONL).

Each line is ``{"messages": [{"role": ..., "content": ...}, ...]}``:

- ``messages`` is a non-empty list and the only key of the object;
- each message has exactly the keys ``role`` and ``content``; ``role`` is
  ``system``, ``user`` or ``assistant``; ``content`` is a string that is not blank;
- an optional ``system`` message comes first, then ``user`` and ``assistant`` turns
  alternate, starting with ``user`` and ending with ``assistant`` (so every example
  has at least one assistant turn to learn from).

Blank lines are skipped. Validation does not stop at the first problem: every
problem in the file is collected into one ``DatasetError`` so a user can fix them
all in one pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
MESSAGE_KEYS = frozenset({"role", "content"})
MAX_REPORTED_ISSUES = 50


@dataclass(frozen=True)
class DatasetIssue:
    """One problem in a dataset file; ``line`` is 1-based, ``None`` for the whole file."""

    line: int | None
    message: str

    def __str__(self) -> str:
        where = "file" if self.line is None else f"line {self.line}"
        return f"{where}: {self.message}"


class DatasetError(ValueError):
    """A dataset file is invalid; ``issues`` lists every problem found, in file order."""

    def __init__(self, source: str, issues: Sequence[DatasetIssue]) -> None:
        if not issues:
            raise ValueError("DatasetError needs at least one issue")
        self.source = source
        self.issues: tuple[DatasetIssue, ...] = tuple(issues)
        shown = [str(issue) for issue in self.issues[:MAX_REPORTED_ISSUES]]
        more = len(self.issues) - len(shown)
        if more:
            shown.append(f"... and {more} more")
        noun = "problem" if len(self.issues) == 1 else "problems"
        super().__init__(f"{source}: {len(self.issues)} {noun}:\n  " + "\n  ".join(shown))

    @property
    def line(self) -> int | None:
        """Line of the first problem (``None`` when it concerns the whole file)."""
        return self.issues[0].line


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ChatExample:
    """One validated conversation and the line it came from."""

    line: int
    messages: tuple[ChatMessage, ...]

    def to_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]


@dataclass(frozen=True)
class ChatDataset:
    """A validated dataset; ``sha256`` is the hash of the file's exact bytes."""

    source: str
    sha256: str
    examples: tuple[ChatExample, ...]

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[ChatExample]:
        return iter(self.examples)


def load_dataset(path: Path | str) -> ChatDataset:
    """Read and validate a JSONL chat dataset; raises ``DatasetError`` listing all problems."""
    path = Path(path)
    return parse_dataset(path.read_bytes(), source=str(path))


def parse_dataset(data: bytes | str, *, source: str = "<dataset>") -> ChatDataset:
    """Validate JSONL chat data given as bytes or text (see the module docstring)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    issues: list[DatasetIssue] = []
    examples: list[ChatExample] = []
    for number, raw_line in enumerate(raw.splitlines(), start=1):
        try:
            text = raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(
                DatasetIssue(number, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
            )
            continue
        if not text.strip():
            continue
        line_issues: list[str] = []
        example = _parse_line(text, number, line_issues)
        issues.extend(DatasetIssue(number, message) for message in line_issues)
        if example is not None and not line_issues:
            examples.append(example)
    if not issues and not examples:
        issues.append(DatasetIssue(None, "the dataset is empty (no examples)"))
    if issues:
        raise DatasetError(source, issues)
    return ChatDataset(
        source=source, sha256=hashlib.sha256(raw).hexdigest(), examples=tuple(examples)
    )


def _parse_line(text: str, number: int, issues: list[str]) -> ChatExample | None:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        issues.append(f"invalid JSON: {exc.msg} (column {exc.colno})")
        return None
    if not isinstance(obj, dict):
        issues.append(f"expected a JSON object, got {_type_name(obj)}")
        return None
    for key in sorted(set(obj) - {"messages"}):
        issues.append(f"unexpected key {key!r} (only 'messages' is allowed)")
    if "messages" not in obj:
        issues.append("missing key 'messages'")
        return None
    raw_messages = obj["messages"]
    if not isinstance(raw_messages, list):
        issues.append(f"'messages' must be a list, got {_type_name(raw_messages)}")
        return None
    if not raw_messages:
        issues.append("'messages' is empty")
        return None
    messages = [_parse_message(i, m, issues) for i, m in enumerate(raw_messages)]
    parsed = [m for m in messages if m is not None]
    if len(parsed) == len(messages):
        _check_turn_order(parsed, issues)
    return ChatExample(line=number, messages=tuple(parsed))


def _parse_message(index: int, raw: Any, issues: list[str]) -> ChatMessage | None:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        issues.append(f"{where} must be an object, got {_type_name(raw)}")
        return None
    ok = True
    for key in sorted(set(raw) - MESSAGE_KEYS):
        issues.append(f"{where} has unexpected key {key!r} (allowed: 'role', 'content')")
        ok = False
    role = raw.get("role")
    if "role" not in raw:
        issues.append(f"{where} is missing 'role'")
        ok = False
    elif role not in ROLES:
        issues.append(f"{where}.role is {role!r}; expected one of 'system', 'user', 'assistant'")
        ok = False
    content = raw.get("content")
    if "content" not in raw:
        issues.append(f"{where} is missing 'content'")
        ok = False
    elif not isinstance(content, str):
        issues.append(f"{where}.content must be a string, got {_type_name(content)}")
        ok = False
    elif not content.strip():
        issues.append(f"{where}.content is empty")
        ok = False
    if not ok:
        return None
    return ChatMessage(role=role, content=content)  # type: ignore[arg-type]


def _check_turn_order(messages: list[ChatMessage], issues: list[str]) -> None:
    turns = messages[1:] if messages[0].role == "system" else messages
    start = len(messages) - len(turns)
    if not turns:
        issues.append("no user or assistant turn after the system message")
        return
    for offset, message in enumerate(turns):
        expected = "user" if offset % 2 == 0 else "assistant"
        if message.role != expected:
            if message.role == "system":
                detail = "a system message is only allowed first"
            else:
                detail = "turns must alternate user/assistant, starting with user"
            issues.append(
                f"messages[{start + offset}].role is {message.role!r}, expected {expected!r} "
                f"({detail})"
            )
            return
    if turns[-1].role != "assistant":
        issues.append("the last message must be an assistant turn (nothing to learn otherwise)")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names.update({list: "a list", dict: "an object"})
    return names.get(type(value), type(value).__name__)
