"""Retrieval figures for one collection: does search find each eval item's source?

For every item with a ``source`` (and so ``facts``), its query (the last user turn) is
sent to ``/v1/retrieval/search`` with the collection and ``top_k`` = the larger k. Per
language (and over all items, and over the items not in English):

- ``page@k``: a hit among the first k comes from the item's source document;
- ``answer@k``: such a hit's text also matches every fact group (the rules of
  ``gateway.compare.scoring``: the chunk the model would read holds the answer).

These figures say how well retrieval serves a user's own documents and questions,
apart from what the model then writes.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai

from gateway.compare.eval_set import EvalItem
from gateway.compare.scoring import matched_groups, source_matches

RETRIEVAL_FILE = "retrieval.json"
ANSWER_K = 5
PAGE_K = 10


@dataclass(frozen=True)
class SearchOutcome:
    """Where one item's source first appears in its search results (1-based; None:
    not in the results)."""

    item_id: str
    lang: str
    page_rank: int | None
    answer_rank: int | None


@dataclass(frozen=True)
class Figures:
    """answer@k and page@k over ``questions`` items of one group."""

    group: str
    questions: int
    answer_at_k: float
    page_at_k: float


async def search_outcomes(
    client: openai.AsyncOpenAI,
    items: Sequence[EvalItem],
    collection: str,
    *,
    top_k: int = PAGE_K,
    mode: str | None = None,
    concurrency: int = 4,
) -> list[SearchOutcome]:
    """Search ``collection`` with every item that names a source (``concurrency`` at a
    time); API errors propagate (``openai.APIStatusError``)."""
    limit = asyncio.Semaphore(concurrency)

    async def one(item: EvalItem) -> SearchOutcome:
        body: dict[str, Any] = {"collection": collection, "query": item.query(), "top_k": top_k}
        if mode is not None:
            body["mode"] = mode
        async with limit:
            found: Any = await client.post("/retrieval/search", cast_to=object, body=body)
        page_rank = answer_rank = None
        for rank, hit in enumerate((found or {}).get("data", []), start=1):
            if not any(source_matches(str(hit.get("source", "")), s) for s in item.source):
                continue
            page_rank = page_rank or rank
            if all(matched_groups(str(hit.get("text", "")), item.facts)):
                answer_rank = rank
                break
        return SearchOutcome(item.id, item.lang, page_rank, answer_rank)

    return list(await asyncio.gather(*(one(item) for item in items if item.source)))


def figures(
    outcomes: Sequence[SearchOutcome], *, answer_k: int = ANSWER_K, page_k: int = PAGE_K
) -> list[Figures]:
    """Per language (sorted, English first), then ``all`` and ``non-en``."""
    groups: dict[str, list[SearchOutcome]] = defaultdict(list)
    for outcome in outcomes:
        groups[outcome.lang].append(outcome)
    ordered = sorted(groups, key=lambda lang: (lang != "en", lang))
    groups["all"] = list(outcomes)
    others = [o for o in outcomes if o.lang != "en"]
    if others and len(ordered) > 1:
        groups["non-en"] = others
        ordered.append("non-en")
    ordered.append("all")

    def share(rows: list[SearchOutcome], hit: str, k: int) -> float:
        ranks = [getattr(r, hit) for r in rows]
        return sum(1 for rank in ranks if rank is not None and rank <= k) / max(len(rows), 1)

    return [
        Figures(
            group,
            len(groups[group]),
            share(groups[group], "answer_rank", answer_k),
            share(groups[group], "page_rank", page_k),
        )
        for group in ordered
    ]


def markdown(collection: str, rows: Sequence[Figures], answer_k: int, page_k: int) -> str:
    lines = [
        f"## Retrieval: collection `{collection}`",
        "",
        f"| language | questions | answer@{answer_k} | page@{page_k} |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r.group} | {r.questions} | {r.answer_at_k:.2f} | {r.page_at_k:.2f} |" for r in rows
    ]
    return "\n".join(lines) + "\n"


def write_figures(
    out: Path,
    collection: str,
    outcomes: Sequence[SearchOutcome],
    *,
    answer_k: int = ANSWER_K,
    page_k: int = PAGE_K,
) -> tuple[list[Figures], list[Path]]:
    """``retrieval.json`` (figures and each item's ranks) and ``retrieval.md`` in ``out``."""
    rows = figures(outcomes, answer_k=answer_k, page_k=page_k)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "collection": collection,
        "answer_k": answer_k,
        "page_k": page_k,
        "figures": [asdict(r) for r in rows],
        "items": [asdict(o) for o in outcomes],
    }
    json_path = out / RETRIEVAL_FILE
    json_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    md_path = out / "retrieval.md"
    md_path.write_text(markdown(collection, rows, answer_k, page_k), encoding="utf-8")
    return rows, [json_path, md_path]
