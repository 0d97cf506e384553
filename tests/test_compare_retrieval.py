"""``loragate compare --retrieval``: answer@k and page@k per language, from the real
search endpoint of the in-process gateway (fake engine and embedder, real retrieval,
real OpenAI SDK over ASGI)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.cli.compare import cmd_compare
from gateway.compare.eval_set import EvalItem
from gateway.compare.search_quality import SearchOutcome, figures, search_outcomes, write_figures
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine
from tests.support.rag_gateway import KEYS, QUESTION, RagGateway, start


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[RagGateway]:
    async for gateway in start(fake_kit, tmp_path, renderer, FakeEngine(max_model_len=2048)):
        yield gateway


def item(item_id: str, lang: str, source: str, fact: str) -> EvalItem:
    return EvalItem.model_validate(
        {"id": item_id, "lang": lang, "question": QUESTION, "facts": [[fact]], "source": source}
    )


async def test_search_figures_per_language(gw: RagGateway, tmp_path: Path) -> None:
    items = [
        item("found", "en", "router.md", "ten seconds"),
        item("page-only", "en", "router.md", "fifty-five seconds"),  # the page, not the fact
        item("other-page", "fr", "missing.md", "ten seconds"),
        EvalItem.model_validate({"id": "no-source", "lang": "de", "question": "x", "facts": ["y"]}),
    ]
    client = openai.AsyncOpenAI(
        base_url="http://gw/v1",
        api_key=KEYS["acme"].key,
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app)),
        max_retries=0,
    )
    outcomes = await search_outcomes(client, items, "manuals")
    by_id = {o.item_id: o for o in outcomes}
    assert set(by_id) == {"found", "page-only", "other-page"}  # no source: not searched
    assert by_id["found"].page_rank == 1 and by_id["found"].answer_rank == 1
    assert by_id["page-only"].page_rank == 1 and by_id["page-only"].answer_rank is None
    assert by_id["other-page"].page_rank is None

    rows, paths = write_figures(tmp_path / "out", "manuals", outcomes)
    table = {r.group: (r.questions, r.answer_at_k, r.page_at_k) for r in rows}
    assert table == {
        "en": (2, 0.5, 1.0),
        "fr": (1, 0.0, 0.0),
        "non-en": (1, 0.0, 0.0),
        "all": (3, 1 / 3, 2 / 3),
    }
    saved = json.loads(paths[0].read_text())
    assert saved["collection"] == "manuals" and len(saved["items"]) == 3
    assert "| en | 2 | 0.50 | 1.00 |" in paths[1].read_text()

    with pytest.raises(openai.NotFoundError):  # a collection the gateway does not have
        await search_outcomes(client, items[:1], "nowhere")
    await client.close()


def test_figures_count_ranks_within_k() -> None:
    outcomes = [
        SearchOutcome("a", "en", 3, 6),  # answer at rank 6: not within 5
        SearchOutcome("b", "en", 11, None),  # page at rank 11: not within 10
        SearchOutcome("c", "es", 1, 1),
    ]
    rows = {r.group: (r.answer_at_k, r.page_at_k) for r in figures(outcomes)}
    assert rows["en"] == (0.0, 0.5) and rows["es"] == (1.0, 1.0)
    assert rows["all"] == (1 / 3, 2 / 3)
    wider = {r.group: r.answer_at_k for r in figures(outcomes, answer_k=6)}
    assert wider["en"] == 0.5


def test_retrieval_only_needs_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LORAGATE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps(item("a", "en", "router.md", "ten").model_dump()) + "\n")
    import argparse

    args = argparse.Namespace(
        eval=eval_file,
        variants=None,
        demo=False,
        retrieval="manuals",
        api_key=None,
        concurrency=2,
        limit=None,
        out=tmp_path / "out",
    )
    assert cmd_compare(args) == 2  # no key: refused before any request
    args.retrieval = None
    assert cmd_compare(args) == 2  # no variants and no --retrieval: nothing to do
