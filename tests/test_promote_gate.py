"""The evaluation gate's decision (``gateway.compare.gate``) on fixed per-item scores:
better, equal and worse candidates, the margin, and the pairing of items."""

from __future__ import annotations

import numpy as np

from gateway.compare.eval_set import EvalItem
from gateway.compare.gate import decide, format_gate, item_score, item_scores
from gateway.compare.results import AnswerRecord
from gateway.compare.scoring import score_answer

STABLE = [0.0] * 10 + [1.0] * 10


def test_a_better_candidate_passes_with_an_interval_above_zero() -> None:
    candidate = [1.0] * 20
    result = decide(candidate, STABLE)
    assert result.passed
    assert result.items == 20
    assert (result.candidate_mean, result.stable_mean) == (1.0, 0.5)
    assert result.difference.estimate == 0.5
    assert 0 < result.difference.low <= 0.5 <= result.difference.high


def test_an_equal_candidate_is_not_worse_and_passes() -> None:
    result = decide(STABLE, STABLE)
    assert result.passed
    assert (result.difference.low, result.difference.high) == (0.0, 0.0)


def test_a_worse_candidate_is_refused_unless_the_margin_allows_it() -> None:
    candidate = [0.0] * 14 + [1.0] * 6  # four items lost, none gained
    result = decide(candidate, STABLE)
    assert not result.passed
    assert result.difference.high <= 0 and result.difference.low < 0
    assert decide(candidate, STABLE, margin=0.5).passed  # low >= -0.2 - noise > -0.5


def test_pairing_a_gain_on_hard_items_passes_where_unpaired_noise_would_not() -> None:
    # The candidate answers every item the stable version answers, plus two more: each
    # pair differs by 0 or +1, so no paired resample can be negative. Resampled as two
    # independent groups, the spread of each mean alone (~0.11) puts the low bound < 0.
    candidate = [0.0] * 8 + [1.0] * 12
    result = decide(candidate, STABLE, resamples=2000, seed=3)
    assert result.passed
    assert result.difference.low >= 0
    rng = np.random.default_rng(3)
    x, y = np.asarray(candidate), np.asarray(STABLE)
    unpaired = x[rng.integers(0, 20, (2000, 20))].mean(1) - y[rng.integers(0, 20, (2000, 20))].mean(
        1
    )
    assert np.percentile(unpaired, 2.5) < 0  # what an unpaired gate would have seen


def test_the_interval_is_seeded() -> None:
    candidate = [0.0] * 9 + [1.0] * 11
    mixed = [1.0, 0.0] * 10
    assert decide(candidate, mixed, seed=7) == decide(candidate, mixed, seed=7)


def test_item_scores_are_the_share_of_checks_passed() -> None:
    item = EvalItem.model_validate(
        {
            "id": "q1",
            "lang": "en",
            "question": "Colour?",
            "facts": [["blue"]],
            "style": {"marker": "Arr"},
        }
    )
    both = AnswerRecord(
        item_id="q1", variant="c", item_hash="h", variant_hash="v", text="Arr, blue"
    )
    fact_only = both.model_copy(update={"text": "It is blue"})
    failed = both.model_copy(update={"error": "HTTP 500: boom"})
    assert item_score(score_answer(item, both)) == 1.0
    assert item_score(score_answer(item, fact_only)) == 0.5
    assert item_score(score_answer(item, failed)) == 0.0
    assert item_scores([item], {}) == [0.0]  # no answer: nothing passed


def test_the_table_names_items_means_interval_and_decision() -> None:
    text = format_gate("pirate", "v2", "v1", decide([1.0] * 6, [0.0] * 6))
    for expected in ("pirate", "v2", "v1", "items", "6", "95% interval", "promote"):
        assert expected in text
    refused = format_gate("pirate", "v2", "v1", decide([0.0] * 6, [1.0] * 6))
    assert "keep the stable version" in refused
