"""Turns a scenario into a seeded stream of concrete chat requests.

Prompt lengths are approximate token counts: a prompt of N tokens is N common English
words, each one token in the usual BPE vocabularies (plus the chat template's few).
Words are drawn at random, so no two prompts share a long prefix and the engine's
prefix cache does not flatter the numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from loadtests.distributions import WeightedChoice, zipf_weights
from loadtests.scenario import Scenario, Tenant

_WORD_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use an each "
    "which she do how their if will up other about out many then them these so some her "
    "would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come "
    "made may part over new sound take only little work know place year live me back give "
    "most very after thing our just name good sentence man think say great where help "
    "through much before line right too mean old any same tell boy follow came want show "
    "also around form three small set put end does another well large must big even such "
    "because turn here why ask went men read need land different home us move try kind "
    "hand picture again change off play spell air away animal house point page letter "
    "mother answer found study still learn should world high every near add food between "
    "own below country plant last school father keep tree never start city earth eye light"
)
WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class PlannedRequest:
    """One request to send: who sends it, its headers and its OpenAI chat body."""

    tenant: str
    model: str
    stream: bool
    rag: bool
    headers: dict[str, str]
    body: dict[str, Any]


class Workload:
    """Draws requests for one simulated user. Not shared between users (own RNG)."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.scenario = scenario
        self.rng = rng
        self._tenants = WeightedChoice(scenario.tenants, [t.weight for t in scenario.tenants])
        self._models = {t.name: self._model_choice(t) for t in scenario.tenants}

    def _model_choice(self, tenant: Tenant) -> WeightedChoice[str]:
        mix = self.scenario.models
        s = mix.zipf_s if mix.popularity == "zipf" else 0.0
        rank_weight = dict(zip(mix.names, zipf_weights(len(mix.names), s), strict=True))
        allowed = [n for n in mix.names if tenant.models is None or n in tenant.models]
        return WeightedChoice(allowed, [rank_weight[n] for n in allowed])

    def think_time(self) -> float:
        wait = self.scenario.think_time
        return self.rng.uniform(wait.min, wait.max) if wait.max > 0 else 0.0

    def prompt(self, tokens: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(tokens))

    def next_request(self) -> PlannedRequest:
        sc = self.scenario
        tenant = self._tenants.sample(self.rng)
        model = self._models[tenant.name].sample(self.rng)
        stream = self.rng.random() < sc.stream_share
        rag = self.rng.random() < sc.rag.share
        body: dict[str, Any] = {
            **sc.request.extra_body,
            "model": model,
            "messages": [
                {"role": "user", "content": self.prompt(sc.prompt_tokens.sample(self.rng))}
            ],
            "max_tokens": sc.output_tokens.sample(self.rng),
            "stream": stream,
        }
        if sc.request.temperature is not None:
            body["temperature"] = sc.request.temperature
        if stream:
            body["stream_options"] = {"include_usage": True}
        if rag:
            body["rag"] = {"collection": sc.rag.collection, "top_k": sc.rag.top_k}
        headers = {"Content-Type": "application/json"}
        if tenant.api_key is not None:
            headers["Authorization"] = f"Bearer {tenant.api_key.get_secret_value()}"
        return PlannedRequest(tenant.name, model, stream, rag, headers, body)
