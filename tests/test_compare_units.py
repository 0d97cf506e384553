"""``loragate compare`` without a server: scoring rules, the paired bootstrap, input
files with line-numbered errors, the shipped eval set, and the report's sentences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.compare.eval_set import EvalFileError, EvalItem, load_eval_set
from gateway.compare.plots import write_plots
from gateway.compare.report import build_report, write_report
from gateway.compare.results import AnswerRecord, CitedChunk, ResultsFile
from gateway.compare.scoring import cited_numbers, contains, normalize, score_answer
from gateway.compare.stats import paired_bootstrap
from gateway.compare.variants import load_variants

DEMO_EVAL = Path(__file__).parents[1] / "gateway" / "demo" / "eval"
KB = Path(__file__).parents[1] / "gateway" / "demo" / "kb"


def item(**fields: Any) -> EvalItem:
    data: dict[str, Any] = {"id": "q1", "lang": "en", "question": "How do I reset it?"}
    data.update(fields)
    return EvalItem.model_validate(data)


def answer(text: str, variant: str = "v", item_id: str = "q1", **fields: Any) -> AnswerRecord:
    return AnswerRecord(
        item_id=item_id, variant=variant, item_hash="i", variant_hash="v", text=text, **fields
    )


# --- scoring ----------------------------------------------------------------------------


def test_matching_ignores_case_and_accents_but_not_digits() -> None:
    assert normalize("  Détartrage\u00a0ÉTÉ  l’eau ") == "detartrage ete l'eau"
    assert contains("Lancez le DETARTRAGE", "détartrage")
    assert contains("Die Pieptöne", "pieptone")
    assert contains("Garantiebedingungen", "Garantie")  # letters may run on
    assert not contains("hold it for 150 seconds", "15 seconds")
    assert not contains("error E12", "E1")
    assert contains("hold 15 seconds.", "15 seconds")


def test_every_group_must_match_and_recall_counts_groups() -> None:
    it = item(facts=[["15 seconds", "15 s"], ["three beeps", "3 beeps"]])
    both = score_answer(it, answer("Hold both for 15 s until you hear 3 BEEPS."))
    assert both.fact_correct is True and both.fact_recall == 1.0 and both.no_fact is False
    half = score_answer(it, answer("Hold both for 15 seconds."))
    assert half.fact_correct is False and half.fact_recall == 0.5 and half.no_fact is False
    none = score_answer(it, answer("Ask the shop."))
    assert none.fact_correct is False and none.fact_recall == 0.0 and none.no_fact is True


def test_must_not_makes_an_otherwise_correct_answer_wrong() -> None:
    it = item(facts=["24 months"], must_not=["12 months"])
    assert score_answer(it, answer("24 months.")).fact_correct is True
    wrong = score_answer(it, answer("24 months, or 12 MONTHS for parts."))
    assert wrong.fact_correct is False and wrong.must_not_hit is True
    assert wrong.fact_recall == 1.0


def test_failed_request_scores_as_an_empty_answer() -> None:
    it = item(facts=["paris"], style={"marker": "Arr, matey!"})
    score = score_answer(it, answer("Arr, matey! Paris", error="HTTP 500: boom"))
    assert score.error and score.fact_correct is False and score.style_ok is False


def test_style_marker_starts_the_answer_and_regex_searches_it() -> None:
    marker = item(style={"marker": "Arr, matey!"})
    assert score_answer(marker, answer("\n  arr, MATEY! Aye.")).style_ok is True
    assert score_answer(marker, answer("Well. Arr, matey!")).style_ok is False
    regex = item(style={"regex": r"(?i)\bahoy\b"})
    assert score_answer(regex, answer("Well, AHOY there")).style_ok is True
    assert score_answer(regex, answer("Ahoyyy")).style_ok is False


def citations(text: str | None = "Hold reset for ten seconds.") -> list[CitedChunk]:
    return [
        CitedChunk(number=1, source="kb/en/faq.md", chunk_id="c1", text="Nothing here."),
        CitedChunk(number=2, source="kb/en/manual.md", chunk_id="c2", text=text),
    ]


def test_citation_must_point_at_the_expected_source_that_holds_the_fact() -> None:
    it = item(facts=["ten seconds"], source="en/manual.md")
    assert cited_numbers("a [2] b [1, 3] c [x]") == {1, 2, 3}
    good = score_answer(it, answer("Ten seconds [2].", citations=citations()))
    assert good.citation_ok is True and good.cited
    assert score_answer(it, answer("Ten seconds [1].", citations=citations())).citation_ok is False
    uncited = score_answer(it, answer("Ten seconds.", citations=citations()))
    assert uncited.citation_ok is False and not uncited.cited
    no_fact = citations("Hold reset for five seconds.")
    assert score_answer(it, answer("Ten seconds [2].", citations=no_fact)).citation_ok is False
    unknown = citations(None)  # the chunk's text could not be fetched
    assert score_answer(it, answer("Ten seconds [2].", citations=unknown)).citation_ok is False
    assert score_answer(item(facts=["x"]), answer("x [2]")).citation_ok is None


# --- bootstrap --------------------------------------------------------------------------


def test_bootstrap_finds_a_known_difference() -> None:
    a = np.array([1.0] * 40 + [0.0] * 10)  # 80%
    b = np.array([1.0] * 10 + [0.0] * 40)  # 20%
    d = paired_bootstrap(a, b, seed=1)
    assert d.estimate == pytest.approx(0.6) and d.n == 50
    assert 0.4 < d.low < 0.6 < d.high < 0.8 and d.significant
    assert paired_bootstrap(b, a, seed=1).high < 0


def test_bootstrap_resamples_items_as_pairs() -> None:
    # Every item is 0.05 easier for b: paired, the interval is that exact shift; had
    # a and b been resampled independently, the spread of the items would widen it.
    a = np.random.default_rng(2).random(50)
    d = paired_bootstrap(a, a + 0.05, seed=0)
    assert d.low == pytest.approx(-0.05) and d.high == pytest.approx(-0.05)


def test_bootstrap_says_noise_when_there_is_no_difference() -> None:
    rng = np.random.default_rng(7)
    a = (rng.random(60) < 0.5).astype(float)
    b = np.roll(a, 1)  # same rate, other items
    d = paired_bootstrap(a, b, seed=3)
    assert d.low < 0 < d.high and not d.significant


def test_bootstrap_is_seeded_drops_unmeasured_pairs_and_takes_percentiles() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(30), rng.random(30) + 0.1
    assert paired_bootstrap(a, b, seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5) != paired_bootstrap(a, b, seed=6)
    with_gaps = paired_bootstrap([1.0, np.nan, 3.0, 5.0], [1.0, 2.0, np.nan, 1.0], "p50")
    assert with_gaps.n == 2 and with_gaps.estimate == pytest.approx(2.0)
    latency = paired_bootstrap([1.0, 2.0, 3.0, 10.0], [1.0, 1.0, 1.0, 1.0], "p95")
    assert latency.estimate == pytest.approx(np.percentile([1, 2, 3, 10], 95) - 1.0)


# --- input files ------------------------------------------------------------------------


def test_eval_set_errors_name_every_bad_line(tmp_path: Path) -> None:
    lines = [
        '{"id": "ok", "lang": "en", "question": "Q?", "facts": ["a"]}',
        '{"id": "bad json", ',
        "",
        '{"id": "nothing", "lang": "en", "question": "Q?"}',
        '{"id": "ok", "lang": "en", "question": "Q?", "facts": ["a"]}',
        '{"id": "two", "lang": "en", "question": "Q?", "messages": [], "facts": [[]]}',
        '{"id": "style", "lang": "en", "question": "Q?", "style": {"regex": "("}}',
        '["not", "an", "object"]',
    ]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvalFileError) as info:
        load_eval_set(path)
    text = str(info.value)
    assert "line 1:" not in text
    assert "line 2: not JSON" in text
    assert "line 4: the item checks nothing" in text
    assert "line 5: id 'ok' repeats line 1" in text
    assert "line 6: messages: List should have at least 1 item" in text
    assert "line 6: facts: group 0" in text
    assert "line 7: style: regex does not compile" in text
    assert "line 8: expected a JSON object" in text


def test_variants_errors_name_the_yaml_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "variants.yaml"
    path.write_text(
        "max_tokens: 64\n"
        "variants:\n"
        "  - name: base\n"
        "    model: m\n"
        "  - name: rag\n"
        "    model: m\n"
        "    rag:\n"
        "      collection: docs\n"
        "      top_k: 0\n"
        "  - name: both\n"
        "    model: m\n"
        "    adapter: a\n"
        "  - name: base\n"
        "    alias: x\n"
        "    temprature: 0\n"
    )
    with pytest.raises(EvalFileError) as info:
        load_variants(path)
    text = str(info.value)
    assert "variants.1.rag.top_k (line 9): Input should be greater than or equal to 1" in text
    assert "variants.2 (line 10): give exactly one of model, adapter or alias" in text
    assert "variants.3.temprature (line 15): Extra inputs are not permitted" in text
    path.write_text("variants:\n  - name: a\n    model: [unclosed\n")
    with pytest.raises(EvalFileError, match=r"line \d+, column \d+: not valid YAML"):
        load_variants(path)
    path.write_text("variants:\n  - {name: a, model: m}\n  - {name: a, model: n}\n")
    with pytest.raises(EvalFileError, match="variant name 'a' is used twice"):
        load_variants(path)


def test_shipped_eval_set_is_varied_and_its_facts_are_in_its_sources() -> None:
    items = load_eval_set(DEMO_EVAL / "eval.jsonl")
    variants = load_variants(DEMO_EVAL / "variants.yaml")
    assert len(items) >= 60 and len({i.lang for i in items}) >= 3
    rag_only = [i for i in items if i.source and not i.style]
    style_only = [i for i in items if i.style and not i.source]
    both = [i for i in items if i.style and i.source]
    assert len(rag_only) >= 30 and len(style_only) >= 6 and len(both) >= 6
    assert any(i.messages for i in items) and any(i.must_not for i in items)
    for it in items:
        for source in it.source:
            text = (KB / source).read_text()
            missing = [g for g in it.facts if not any(contains(text, alt) for alt in g)]
            assert not missing, (it.id, source, missing)
            assert not any(contains(text, m) for m in it.must_not), it.id
    names = {v.name for v in variants.variants}
    assert {"base+prompt", "base+prompt+rag", "lora", "lora+rag", "support-bot"} <= names


# --- results file and report ------------------------------------------------------------


def test_results_file_drops_a_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    results = ResultsFile(path)
    results.append(answer("first"))
    results.close()
    with path.open("a") as handle:
        handle.write('{"item_id": "q2", "variant": "v", "te')  # killed mid-write
    reopened = ResultsFile(path)
    assert list(reopened.records) == [("q1", "v")]
    reopened.append(answer("second", item_id="q2"))
    reopened.close()
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == [
        "first",
        "second",
    ]
    assert ResultsFile(path).done("q2", "v", "i", "v")
    assert not ResultsFile(path).done("q2", "v", "i", "changed-variant")


def variant_file(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "variants.yaml"
    path.write_text("variants:\n" + "".join(f"  - {{name: {n}, model: m-{n}}}\n" for n in names))
    return path


def test_report_names_the_winner_or_says_noise_and_writes_its_files(tmp_path: Path) -> None:
    items = [
        item(id=f"q{i}", lang=["en", "fr"][i % 2], facts=["paris"], style={"marker": "Arr"})
        for i in range(30)
    ]
    variants = load_variants(variant_file(tmp_path, ["plain", "tuned", "twin"]))
    records: dict[tuple[str, str], AnswerRecord] = {}
    for i, it in enumerate(items):
        for v, text, ttft in (
            ("plain", "Paris." if i % 3 == 0 else "No idea.", 0.2),
            ("tuned", "Arr, Paris!", 0.5),
            ("twin", "Arr, Lyon!" if i in (4, 9) else "Arr, Paris!", 0.5 + (i % 2) / 50),
        ):
            records[(it.id, v)] = answer(
                text, v, it.id, ttft_s=ttft, latency_s=ttft * 2,
                prompt_tokens=12 if v == "plain" else 10, completion_tokens=3,
            )  # fmt: skip
    report = build_report(items, variants, records, resamples=500)
    assert report.overall["tuned"]["fact_accuracy"] == 1.0
    assert report.overall["plain"]["fact_accuracy"] == pytest.approx(10 / 30)
    sentences = report.sentences
    # tuned is right twice more than twin in 30 items: within noise.
    assert "within noise" in sentences["fact_accuracy"]
    assert sentences["ttft_p50"].startswith("TTFT p50: plain wins with 0.20 s")
    assert "beats every other variant beyond noise" in sentences["ttft_p50"]
    assert report.by_language["plain"]["en"]["style_adherence"] == 0.0
    assert sentences["completion_tokens"] == "Completion tokens: no winner, all 3 variants score 3."
    assert "tuned and twin are tied at 10 (the same on each of 30" in sentences["prompt_tokens"]
    paths = write_report(report, tmp_path / "out") + write_plots(report, tmp_path / "out")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| tuned |" in md and "| plain | fr |" in md and sentences["ttft_p50"] in md
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["overall"]["tuned"]["style_adherence"] == 1.0
    pair = next(
        c for c in data["comparisons"]
        if c["metric"] == "fact_accuracy" and (c["a"], c["b"]) == ("plain", "tuned")
    )  # fmt: skip
    assert pair["significant"] and pair["ci_high"] < 0
    assert (tmp_path / "out" / "quality_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_two_variants_with_a_clear_winner_get_a_winner_sentence(tmp_path: Path) -> None:
    items = [item(id=f"q{i}", facts=["paris"]) for i in range(20)]
    variants = load_variants(variant_file(tmp_path, ["rag", "plain"]))
    records = {}
    for it in items:
        records[(it.id, "rag")] = answer("Paris", "rag", it.id)
        records[(it.id, "plain")] = answer("Lyon", "plain", it.id)
    report = build_report(items, variants, records, resamples=300)
    assert report.sentences["fact_accuracy"].startswith(
        "Fact accuracy: rag wins with 100%, 100 points higher than the runner-up plain (0%"
    )
    assert "not measured" in report.sentences["style_adherence"]


def test_demo_flag_finds_the_shipped_files_and_the_demo_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli.compare import demo_eval_dir, demo_key

    assert (demo_eval_dir() / "eval.jsonl").is_file()
    assert (demo_eval_dir() / "variants.yaml").is_file()
    monkeypatch.setenv("LORAGATE_CACHE", str(tmp_path))
    assert demo_key() is None
    keys = {"format": 1, "keys": {"acme": {"key": "lg-acme-secret", "id": "a", "hash": "h"}}}
    (tmp_path / "demo-keys.json").write_text(json.dumps(keys))
    assert demo_key() == "lg-acme-secret"
