"""Passages: ranked chunks grown into runs of adjacent chunks of their own section.

A manual's answer often sits a paragraph after the sentence that matches the question
(a parameter's name, then its default two sentences later), so the best chunk is on the
right page but stops short of the answer. :func:`build_passages` turns the ranking
into ``k`` passages instead of ``k`` chunks:

* the best-ranked chunk not yet covered seeds a passage; a lower-ranked chunk that an
  earlier passage already covers takes no slot (the slot goes to the next candidate);
* the passage grows one neighbour at a time, within the same section only (same
  document, same heading path, no text between them), never into another passage,
  until it would pass ``passage_tokens`` cl100k tokens: at each step it takes the
  neighbour (previous or next) that ranked better, the next one on a tie;
* its text is the document's text over the run (chunk overlaps counted once), its
  ``start``/``end`` the run's offsets, its ``chunk_id`` and ``score`` the seed's.

Pure functions over immutable snapshots: safe to call from any thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from retrieval.collection import Snapshot
from retrieval.records import Chunk, SearchHit

_MAX_GAP = 3
"""Characters between two chunks of one section: only the whitespace the chunker
stripped (a heading between two sections is its line plus blank lines, more than this)."""


@dataclass(slots=True)
class _Run:
    snapshot: int
    seed: int
    first: int
    last: int
    tokens: int
    score: float


def same_section(before: Chunk, after: Chunk) -> bool:
    """Whether ``after`` directly follows ``before`` inside one section."""
    return (
        before.document_id == after.document_id
        and before.heading_path == after.heading_path
        and after.start <= before.end + _MAX_GAP
        and after.end > before.end
    )


def added_tokens(before: Chunk, after: Chunk) -> int:
    """Tokens ``after`` adds to a run ending with ``before`` (its overlap not counted)."""
    fresh = after.end - max(after.start, before.end)
    return -(-after.token_count * max(fresh, 0) // max(len(after.text), 1))


def joined_text(chunks: Sequence[Chunk]) -> str:
    """The text of adjacent chunks of one section, each overlap once."""
    parts = [chunks[0].text]
    for before, after in itertools.pairwise(chunks):
        gap = after.start - before.end
        if gap >= 0:
            parts.append(("" if gap == 0 else " " if gap == 1 else "\n\n") + after.text)
        else:
            parts.append(after.text[-gap:])
    return "".join(parts)


def build_passages(
    snapshots: Sequence[Snapshot],
    ranked: Sequence[tuple[float, int, int]],
    *,
    k: int,
    passage_tokens: int,
) -> list[SearchHit]:
    """The ``k`` best passages for ``ranked`` candidates ``(score, snapshot, row)``,
    best first (see the module docstring). Pass more than ``k`` candidates: those that
    fall inside a passage free their slot for the next one."""
    rank_of: dict[tuple[int, int], int] = {}
    for position, (_, number, row) in enumerate(ranked):
        rank_of.setdefault((number, row), position)
    taken: set[tuple[int, int]] = set()
    runs: list[_Run] = []
    for score, number, row in ranked:
        if len(runs) >= k:
            break
        if (number, row) in taken:
            continue
        chunks = snapshots[number].chunks
        run = _Run(number, row, row, row, chunks[row].token_count, score)
        taken.add((number, row))
        _grow(run, chunks, taken, rank_of, passage_tokens)
        runs.append(run)
    return [_hit(snapshots[r.snapshot], r) for r in runs]


def _grow(
    run: _Run,
    chunks: Sequence[Chunk],
    taken: set[tuple[int, int]],
    rank_of: dict[tuple[int, int], int],
    budget: int,
) -> None:
    unranked = len(rank_of) + 1
    while True:
        options: list[tuple[int, int, int]] = []  # (rank, side: 0 next / 1 previous, cost)
        after, before = run.last + 1, run.first - 1
        if (
            after < len(chunks)
            and (run.snapshot, after) not in taken
            and same_section(chunks[run.last], chunks[after])
        ):
            cost = added_tokens(chunks[run.last], chunks[after])
            options.append((rank_of.get((run.snapshot, after), unranked), 0, cost))
        if (
            before >= 0
            and (run.snapshot, before) not in taken
            and same_section(chunks[before], chunks[run.first])
        ):
            cost = added_tokens(chunks[before], chunks[run.first])
            options.append((rank_of.get((run.snapshot, before), unranked), 1, cost))
        options = [o for o in options if run.tokens + o[2] <= budget]
        if not options:
            return
        _, side, cost = min(options)
        row = after if side == 0 else before
        if side == 0:
            run.last = row
        else:
            run.first = row
        run.tokens += cost
        taken.add((run.snapshot, row))


def _hit(snapshot: Snapshot, run: _Run) -> SearchHit:
    seed = snapshot.chunks[run.seed]
    hit = SearchHit.from_chunk(seed, run.score, snapshot.name)
    if run.first == run.last:
        return hit
    chunks = snapshot.chunks[run.first : run.last + 1]
    return replace(hit, text=joined_text(chunks), start=chunks[0].start, end=chunks[-1].end)
