"""Score one saved answer against its eval item: facts, must_not, style, citations.

Matching rules (all on normalised text: Unicode NFKD without accents, case-folded,
whitespace collapsed, typographic quotes and dashes made plain, so "Entkalkung",
"ENTKALKUNG" and "entkälkung" are one word):
- An alternative matches where it occurs as a substring, except that an alternative
  starting (ending) with a digit may not be preceded (followed) by another digit:
  "15" does not match "150" and "E1" does not match "E12", while letters may run on
  ("Garantie" matches "Garantiebedingungen", "beep" matches "beeps").
- A fact group is matched when any of its alternatives is; an answer is correct when
  every group is matched and no ``must_not`` string occurs.
- Style: ``marker`` must begin the answer (after leading spaces); ``regex`` is
  searched in the raw answer (use ``(?i)`` for case-insensitive patterns).
- Citations: ``[n]`` markers (also ``[1, 2]``) in the answer point at the gateway's
  numbered ``citations``; a citation is accurate when one cited source is the expected
  document and its chunk's text matches every fact group.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from gateway.compare.eval_set import EvalItem
from gateway.compare.results import AnswerRecord, CitedChunk

_CITATION = re.compile(r"\[\s*(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*\]")
_SPACES = re.compile(r"\s+")
# Typographic variants that keyboards do not type: "l’eau" matches "l'eau".
_PUNCTUATION = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2013": "-",
        "\u00a0": " ",
    }
)


def normalize(text: str) -> str:
    """Case-folded, accent-free, single-spaced text (what every match runs on)."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_PUNCTUATION))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", stripped.casefold()).strip()


@lru_cache(maxsize=4096)
def _pattern(alternative: str) -> re.Pattern[str]:
    norm = normalize(alternative)
    head = r"(?<!\d)" if norm[:1].isdigit() else ""
    tail = r"(?!\d)" if norm[-1:].isdigit() else ""
    return re.compile(head + re.escape(norm) + tail)


def contains(text: str, alternative: str) -> bool:
    """Whether ``alternative`` occurs in ``text`` under the rules above."""
    return _pattern(alternative).search(normalize(text)) is not None


def matched_groups(text: str, facts: list[list[str]]) -> list[bool]:
    norm = normalize(text)
    return [any(_pattern(alt).search(norm) for alt in group) for group in facts]


def cited_numbers(text: str) -> set[int]:
    """The ``n`` of every ``[n]`` (or ``[n, m]``) marker in ``text``."""
    numbers: set[int] = set()
    for match in _CITATION.finditer(text):
        numbers.update(int(n) for n in re.split(r"[,;]", match.group(1)))
    return numbers


def source_matches(cited: str, expected: str) -> bool:
    """Equal, or ``cited`` is a path ending in ``expected`` ("kb/en/manual.md" vs
    "en/manual.md"), compared without case."""
    cited, expected = cited.casefold(), expected.casefold()
    return cited == expected or cited.endswith("/" + expected.lstrip("/"))


@dataclass(frozen=True)
class ItemScore:
    """One answer's marks; ``None`` where the item does not check that property."""

    item_id: str
    variant: str
    lang: str
    error: bool
    fact_correct: bool | None
    fact_recall: float | None
    no_fact: bool | None
    must_not_hit: bool | None
    style_ok: bool | None
    citation_ok: bool | None
    cited: bool


def score_answer(item: EvalItem, record: AnswerRecord) -> ItemScore:
    """Marks for ``record`` (a failed request scores as an empty answer)."""
    text = record.text if record.ok else ""
    groups = matched_groups(text, item.facts) if item.facts else []
    must_not_hit = any(contains(text, s) for s in item.must_not) if item.must_not else None
    fact_correct: bool | None = None
    if item.facts:
        fact_correct = all(groups) and not must_not_hit
    elif item.must_not:
        fact_correct = not must_not_hit
    cited_chunks = _cited(text, record.citations)
    return ItemScore(
        item_id=item.id,
        variant=record.variant,
        lang=item.lang,
        error=not record.ok,
        fact_correct=fact_correct,
        fact_recall=sum(groups) / len(groups) if groups else None,
        no_fact=(not any(groups)) if groups else None,
        must_not_hit=must_not_hit,
        style_ok=_style_ok(item, text) if item.style else None,
        citation_ok=_citation_ok(item, cited_chunks) if item.source else None,
        cited=bool(cited_chunks),
    )


def _cited(text: str, citations: list[CitedChunk]) -> list[CitedChunk]:
    by_number = {c.number: c for c in citations}
    return [by_number[n] for n in sorted(cited_numbers(text)) if n in by_number]


def _style_ok(item: EvalItem, text: str) -> bool:
    assert item.style is not None
    if item.style.marker is not None:
        return normalize(text).startswith(normalize(item.style.marker))
    assert item.style.regex is not None
    return re.search(item.style.regex, text) is not None


def _citation_ok(item: EvalItem, cited: list[CitedChunk]) -> bool:
    for chunk in cited:
        if not any(source_matches(chunk.source, s) for s in item.source):
            continue
        if chunk.text is not None and all(matched_groups(chunk.text, item.facts)):
            return True
    return False
