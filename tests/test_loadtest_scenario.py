"""Load-test scenarios, distributions and workload: pure, fast, no server."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from loadtests.distributions import (
    FixedLength,
    NormalLength,
    UniformLength,
    WeightedChoice,
    zipf_weights,
)
from loadtests.scenario import load_scenario, parse_scenario
from loadtests.workload import Workload

DEMO = Path(__file__).resolve().parent.parent / "loadtests" / "scenarios" / "demo.yaml"


def minimal(**fields: Any) -> dict[str, Any]:
    return {"models": {"names": ["a", "b", "c"]}, **fields}


def test_demo_scenario_is_valid_with_rag_off() -> None:
    keys = {"LORAGATE_DEMO_ACME_KEY": "k-acme", "LORAGATE_DEMO_GLOBEX_KEY": "k-globex"}
    scenario = load_scenario(DEMO, keys)
    assert scenario.rag.share == 0.0
    assert scenario.models.popularity == "zipf"
    assert {t.name for t in scenario.tenants} == {"acme", "globex"}
    assert all(t.api_key is not None for t in scenario.tenants)


def test_bare_number_is_a_fixed_length_and_dists_are_parsed() -> None:
    scenario = parse_scenario(
        minimal(
            prompt_tokens=12, output_tokens={"dist": "normal", "mean": 20, "stddev": 5, "max": 30}
        )
    )
    assert scenario.prompt_tokens == FixedLength(value=12)
    assert isinstance(scenario.output_tokens, NormalLength)


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt_tokens": {"dist": "uniform", "min": 10, "max": 5}},
        {"prompt_tokens": {"dist": "poisson", "mean": 3}},
        {"prompt_tokens": 0},
        {"output_tokens": {"dist": "normal", "mean": 10, "stddev": 2}},  # no max
        {"stream_share": 1.5},
        {"rag": {"share": 0.2}},  # no collection
        {"models": {"names": ["a", "a"]}},
        {"models": {"names": []}},
        {"models": {"names": ["a"], "popularity": "zipf", "zipf_s": -1}},
        {"tenants": [{"name": "t", "models": ["zzz"]}]},
        {"tenants": [{"name": "t"}, {"name": "t"}]},
        {"tenants": [{"name": "t", "api_key": "k", "api_key_env": "K"}]},
        {"tenants": []},
        {"request": {"extra_body": {"model": "x"}}},
        {"think_time": {"min": 2, "max": 1}},
        {"unknown_field": 1},
    ],
)
def test_invalid_scenarios_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_scenario(minimal(**fields), environ={})


def test_a_scenario_must_be_a_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        parse_scenario(["models"])


def test_api_key_env_is_resolved_and_never_printed() -> None:
    data = minimal(tenants=[{"name": "t", "api_key_env": "LT_KEY"}])
    scenario = parse_scenario(data, environ={"LT_KEY": "sk-secret"})
    key = scenario.tenants[0].api_key
    assert key is not None and key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(scenario)
    with pytest.raises(ValueError, match="LT_KEY"):
        parse_scenario(data, environ={})


def test_zipf_weights() -> None:
    assert zipf_weights(3, 1.0) == pytest.approx([6 / 11, 3 / 11, 2 / 11])
    assert zipf_weights(4, 0.0) == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError):
        zipf_weights(0, 1.0)


def test_weighted_choice_follows_its_weights() -> None:
    choice = WeightedChoice(["x", "y", "z"], zipf_weights(3, 1.0))
    rng = random.Random(7)
    draws = Counter(choice.sample(rng) for _ in range(30_000))
    for item, p in zip(["x", "y", "z"], choice.probabilities, strict=True):
        assert draws[item] / 30_000 == pytest.approx(p, abs=0.015)
    never = WeightedChoice(["never", "always"], [0.0, 1.0])
    assert {never.sample(rng) for _ in range(1000)} == {"always"}


def test_length_distributions_stay_in_range() -> None:
    rng = random.Random(3)
    uniform = UniformLength(dist="uniform", min=5, max=8)
    assert {uniform.sample(rng) for _ in range(500)} == {5, 6, 7, 8}
    normal = NormalLength(dist="normal", mean=50, stddev=40, min=10, max=60)
    draws = [normal.sample(rng) for _ in range(2000)]
    assert min(draws) == 10 and max(draws) == 60  # clipped at both ends
    middle = sorted(draws)[len(draws) // 2]
    assert 45 <= middle <= 55
    assert FixedLength(value=9).sample(rng) == 9


def workload(seed: int = 0, **fields: Any) -> Workload:
    return Workload(parse_scenario(minimal(**fields)), random.Random(seed))


def test_requests_follow_the_scenario() -> None:
    w = workload(
        tenants=[
            {"name": "big", "api_key": "k-big", "weight": 3},
            {"name": "small", "api_key": "k-small", "models": ["c"]},
        ],
        models={"names": ["a", "b", "c"], "popularity": "zipf", "zipf_s": 1.2},
        prompt_tokens=20,
        output_tokens={"dist": "uniform", "min": 4, "max": 6},
        stream_share=0.25,
        rag={"share": 0.5, "collection": "manuals", "top_k": 3},
        request={"temperature": 0.5, "extra_body": {"ignore_eos": True}},
    )
    planned = [w.next_request() for _ in range(4000)]
    tenants = Counter(p.tenant for p in planned)
    assert tenants["big"] / 4000 == pytest.approx(0.75, abs=0.03)
    assert {p.model for p in planned if p.tenant == "small"} == {"c"}
    big_models = Counter(p.model for p in planned if p.tenant == "big")
    assert big_models["a"] > big_models["b"] > big_models["c"] > 0
    assert sum(p.stream for p in planned) / 4000 == pytest.approx(0.25, abs=0.03)
    assert sum(p.rag for p in planned) / 4000 == pytest.approx(0.5, abs=0.03)
    for p in planned[:200]:
        assert p.headers["Authorization"] == f"Bearer k-{p.tenant}"
        assert len(p.body["messages"][0]["content"].split()) == 20
        assert 4 <= p.body["max_tokens"] <= 6
        assert p.body["temperature"] == 0.5 and p.body["ignore_eos"] is True
        assert p.body["stream"] is p.stream
        assert ("stream_options" in p.body) is p.stream
        assert p.body.get("rag") == ({"collection": "manuals", "top_k": 3} if p.rag else None)


def test_defaults_send_no_key_and_no_rag() -> None:
    p = workload().next_request()
    assert "Authorization" not in p.headers
    assert "rag" not in p.body and not p.rag


def test_same_seed_same_requests() -> None:
    def draws(seed: int) -> list[Any]:
        w = workload(seed)
        return [w.next_request() for _ in range(3)]

    first, again, other = draws(5), draws(5), draws(6)
    assert first == again
    assert first != other
