"""The results file: one JSON line per finished (item, variant) answer, appended as
answers finish, so a crash or Ctrl-C loses nothing that was already answered.

A rerun reads it first and skips every pair whose answer is there, succeeded, and was
made from the same item and variant (their fingerprints match); the newest line of a
pair wins. A line cut short by a crash (the last one, with no newline) is removed on
open, before anything is appended after it.

Concurrency rule: one writer per file (one ``loragate compare`` at a time); within it,
``ResultsFile.append`` is called from the event loop only, and each line is written
and flushed whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import IO

from pydantic import BaseModel, Field, ValidationError

from gateway.compare.eval_set import EvalItem

RESULTS_FILE = "results.jsonl"


class CitedChunk(BaseModel):
    """A source the gateway gave the model (``citations[]``), with the chunk's text
    when the search endpoint could return it (to check that it holds the fact)."""

    number: int
    source: str
    chunk_id: str = ""
    collection: str = ""
    text: str | None = None


class AnswerRecord(BaseModel):
    """One answer of one variant to one item, with its timings and token counts."""

    item_id: str
    variant: str
    item_hash: str
    variant_hash: str
    text: str = ""
    citations: list[CitedChunk] = Field(default_factory=list)
    ttft_s: float | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    finished_at: float = Field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.error is None


def item_fingerprint(item: EvalItem) -> str:
    """Changes when what is sent changes (the conversation); editing the checks does
    not redo answers, because scoring runs on the saved text."""
    return hashlib.sha256(json.dumps(item.conversation()).encode()).hexdigest()[:16]


class ResultsFile:
    """Append-only JSONL of ``AnswerRecord``; ``records`` holds the newest per pair."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[tuple[str, str], AnswerRecord] = {}
        self.skipped_lines = 0
        self._handle: IO[str] | None = None
        if self.path.exists():
            self._repair_tail()
            self._read()

    def _repair_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1  # 0 when the only line is the cut one
            with self.path.open("r+b") as handle:
                handle.truncate(keep)

    def _read(self) -> None:
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = AnswerRecord.model_validate_json(line)
                except ValidationError:
                    self.skipped_lines += 1
                    continue
                self.records[(record.item_id, record.variant)] = record

    def done(self, item_id: str, variant: str, item_hash: str, variant_hash: str) -> bool:
        """Whether this pair has a successful answer made from the same inputs."""
        record = self.records.get((item_id, variant))
        return (
            record is not None
            and record.ok
            and record.item_hash == item_hash
            and record.variant_hash == variant_hash
        )

    def current(
        self, item_hashes: dict[str, str], variant_hashes: dict[str, str]
    ) -> tuple[dict[tuple[str, str], AnswerRecord], int]:
        """The answers (failed ones too) made from these items and variants as they are
        now (``id``/``name`` -> fingerprint), and how many saved answers of the same
        pairs were made from other inputs (an edited item, variant or ``max_tokens``):
        those are left out of a report, as a run would ask for them again."""
        current: dict[tuple[str, str], AnswerRecord] = {}
        stale = 0
        for (item_id, variant), record in self.records.items():
            if item_id not in item_hashes or variant not in variant_hashes:
                continue
            if (record.item_hash, record.variant_hash) == (
                item_hashes[item_id],
                variant_hashes[variant],
            ):
                current[(item_id, variant)] = record
            else:
                stale += 1
        return current, stale

    def append(self, record: AnswerRecord) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(record.model_dump_json() + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records[(record.item_id, record.variant)] = record

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
