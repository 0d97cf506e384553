"""``loragate compare`` end to end against the in-process gateway (fake engine, fake
embedder, real retrieval, real OpenAI SDK over ASGI): variants without RAG, with RAG,
and a tenant alias whose policy retrieves; citations checked against chunk texts
fetched from the search endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.compare.eval_set import EvalItem
from gateway.compare.report import build_report
from gateway.compare.results import ResultsFile
from gateway.compare.runner import run_pairs
from gateway.compare.variants import load_variants
from gateway.engine.interface import GenerationRequest
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine
from tests.support.rag_gateway import KEYS, QUESTION, RagGateway, start

PIRATE_REPLY = "Arr, matey! Hold the reset button for ten seconds [1] ."


class PersonaEngine(FakeEngine):
    """The ``pirate`` adapter answers with the fact and a citation; the base does not."""

    def words(self, request: GenerationRequest, index: int) -> list[str]:
        if request.adapter is not None and request.adapter.name == "pirate":
            return PIRATE_REPLY.split()
        return ["I", "cannot", "say", "."]


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[RagGateway]:
    async for gateway in start(fake_kit, tmp_path, renderer, PersonaEngine(max_model_len=2048)):
        yield gateway


def items() -> list[EvalItem]:
    return [
        EvalItem.model_validate(
            {
                "id": f"reset-{i}",
                "lang": ["en", "fr"][i % 2],
                "question": QUESTION,
                "facts": [["ten seconds", "10 seconds"]],
                "source": "router.md",
                "style": {"marker": "Arr, matey!"},
            }
        )
        for i in range(6)
    ]


async def test_compare_runs_every_pair_through_the_gateway(gw: RagGateway, tmp_path: Path) -> None:
    variants_file = tmp_path / "variants.yaml"
    variants_file.write_text(
        "max_tokens: 32\n"
        "variants:\n"
        "  - {name: base, model: tiny-base, system: You are terse.}\n"
        "  - {name: base+rag, model: tiny-base, rag: {collection: manuals, top_k: 2}}\n"
        "  - {name: bot, alias: support-bot}\n"
    )
    variants = load_variants(variants_file)
    client = openai.AsyncOpenAI(
        base_url="http://gw/v1",
        api_key=KEYS["acme"].key,
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app)),
        max_retries=0,
    )
    results = ResultsFile(tmp_path / "out" / "results.jsonl")
    summary = await run_pairs(
        client, items(), variants, results, max_tokens=32, concurrency=3, progress=False
    )
    await client.close()
    results.close()
    assert (summary.planned, summary.answered, summary.failed) == (18, 18, 0)
    assert len(gw.engine.requests) == 18
    assert {r.params.temperature for r in gw.engine.requests} == {0.0}

    saved = ResultsFile(tmp_path / "out" / "results.jsonl").records
    bot = saved[("reset-0", "bot")]
    assert bot.text.strip() == PIRATE_REPLY
    assert bot.ttft_s is not None and bot.latency_s is not None and bot.ttft_s <= bot.latency_s
    assert bot.prompt_tokens and bot.completion_tokens == len(PIRATE_REPLY.split())
    assert bot.citations and bot.citations[0].source == "router.md"
    assert bot.citations[0].text and "ten" in bot.citations[0].text  # fetched by search
    rag = saved[("reset-1", "base+rag")]
    assert [c.number for c in rag.citations] == [1, 2] and rag.citations[0].text is None
    assert saved[("reset-1", "base")].citations == []

    report = build_report(items(), variants, saved, resamples=300)
    assert report.overall["bot"]["fact_accuracy"] == 1.0
    assert report.overall["bot"]["citation_accuracy"] == 1.0
    assert report.overall["bot"]["style_adherence"] == 1.0
    assert report.overall["base+rag"]["fact_accuracy"] == 0.0
    assert report.overall["base+rag"]["citation_accuracy"] == 0.0
    assert report.overall["base"]["no_fact_rate"] == 1.0
    assert report.overall["base"]["citation_accuracy"] is None  # no retrieval, no sources
    assert report.sentences["fact_accuracy"].startswith("Fact accuracy: bot wins with 100%")
    assert report.by_language["bot"]["fr"]["fact_accuracy"] == 1.0

    again = await run_pairs(
        openai.AsyncOpenAI(base_url="http://unused/v1", api_key="x"),
        items(),
        variants,
        ResultsFile(tmp_path / "out" / "results.jsonl"),
        max_tokens=32,
        progress=False,
    )
    assert (again.skipped, again.answered) == (18, 0)  # nothing left to ask


async def test_refused_requests_are_recorded_as_failures(gw: RagGateway, tmp_path: Path) -> None:
    variants_file = tmp_path / "variants.yaml"
    variants_file.write_text("variants:\n  - {name: other, model: robot}\n")  # globex's only
    client = openai.AsyncOpenAI(
        base_url="http://gw/v1",
        api_key=KEYS["acme"].key,
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app)),
        max_retries=0,
    )
    results = ResultsFile(tmp_path / "results.jsonl")
    summary = await run_pairs(
        client, items()[:2], load_variants(variants_file), results, max_tokens=8, progress=False
    )
    await client.close()
    assert summary.failed == 2 and "HTTP 404" in summary.errors[0]
    assert not results.done("reset-0", "other", "", "")
    assert gw.engine.requests == []
