"""RAG in chat over ASGI (fake engine, fake embedder): sources in the prompt, placement
under the policy, citations in both response modes, tenant isolation, policy-forced
retrieval, trimming, the OpenAI SDK, and the search endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine
from tests.support.rag_gateway import (
    ACME_POLICY,
    KEYS,
    QUESTION,
    SLOT_POLICY,
    RagGateway,
    bearer,
    start,
    upload,
)
from tests.support.sse import parse_sse


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[RagGateway]:
    async for gateway in start(fake_kit, tmp_path, renderer, FakeEngine(max_model_len=2048)):
        yield gateway


def prompt_text(gw: RagGateway, renderer: PromptRenderer) -> str:
    return renderer.decode(gw.engine.requests[-1].prompt_token_ids)


async def test_search_endpoint_finds_the_passage(gw: RagGateway) -> None:
    r = await gw.client.post(
        "/v1/retrieval/search",
        json={"collection": "manuals", "query": QUESTION, "top_k": 2},
        headers=bearer("acme"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["mode"] == "hybrid"
    best = body["data"][0]
    assert best["rank"] == 1 and "reset button" in best["text"]
    assert best["collection"] == "manuals" and best["source"] == "router.md"
    assert best["chunk_id"] in await gw.chunk_ids("manuals")
    for mode in ("dense", "bm25"):
        r = await gw.client.post(
            "/v1/retrieval/search",
            json={"collection": ["manuals"], "query": QUESTION, "mode": mode},
            headers=bearer("acme"),
        )
        assert "reset button" in r.json()["data"][0]["text"], mode


async def test_chat_puts_numbered_sources_in_the_user_turn_after_the_policy(
    gw: RagGateway, renderer: PromptRenderer
) -> None:
    messages = [
        {"role": "system", "content": "CLIENT-RULE: be brief."},
        {"role": "user", "content": QUESTION},
    ]
    r = await gw.chat("acme", messages=messages, rag={"collection": "manuals"})
    assert r.status_code == 200, r.text
    text = prompt_text(gw, renderer)
    policy, client, sources = (text.index(s) for s in (ACME_POLICY, "CLIENT-RULE", "<sources>"))
    question = text.rindex(QUESTION)
    assert policy < client < sources < text.index("</sources>") < question
    assert "not instructions" in text and "[1] Acme Router Manual — router.md" in text
    assert "hold the recessed reset button" in text
    citations = r.json()["citations"]
    assert [c["number"] for c in citations] == list(range(1, len(citations) + 1))
    assert 1 <= len(citations) <= 3
    assert {c["chunk_id"] for c in citations} <= await gw.chunk_ids("manuals")
    first = citations[0]
    assert first["title"] == "Acme Router Manual" and first["source"] == "router.md"
    assert first["collection"] == "manuals" and first["document_id"]
    assert f"[{len(citations)}]" in text and f"[{len(citations) + 1}]" not in text
    # The policy is the only system text: the sources are data in the user's turn,
    # ahead of the question (a retrieved document never speaks as the system).
    sources_text = text[text.index("The numbered") : text.index("</sources>") + 10]
    assert (
        renderer.chat(
            [
                {"role": "system", "content": ACME_POLICY},
                messages[0],
                {"role": "user", "content": f"{sources_text}\n\n{QUESTION}"},
            ]
        )
        == gw.engine.requests[-1].prompt_token_ids
    )


async def test_streaming_puts_citations_on_the_last_finish_chunk_only(gw: RagGateway) -> None:
    plain = (await gw.chat("acme", rag={"collection": "manuals"}, max_tokens=4)).json()
    r = await gw.chat(
        "acme",
        rag={"collection": "manuals"},
        max_tokens=4,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    carrying = [c for c in chunks if "citations" in c]
    assert len(carrying) == 1
    (last,) = carrying
    finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 2 and last is finishes[-1]
    assert last["citations"] == plain["citations"]
    assert chunks[-1]["usage"] is not None and "citations" not in chunks[-1]


async def test_without_rag_nothing_changes(gw: RagGateway, renderer: PromptRenderer) -> None:
    r = await gw.chat("acme")
    assert "citations" not in r.json()
    assert "<sources>" not in prompt_text(gw, renderer)
    streamed = parse_sse((await gw.chat("acme", stream=True)).text)
    assert all("citations" not in c for c in streamed[:-1])


async def test_other_tenants_collections_look_missing(gw: RagGateway) -> None:
    other = await gw.chat("acme", rag={"collection": "globex"})
    missing = await gw.chat("acme", rag={"collection": "nope"})
    allowed_but_absent = await gw.chat("acme", rag={"collection": "faq"})
    mixed = await gw.chat("acme", rag={"collection": ["manuals", "globex"]})
    reverse = await gw.chat("globex", model="robot", rag={"collection": "manuals"})
    for r in (other, missing, allowed_but_absent, mixed, reverse):
        assert r.status_code == 404
        assert r.content == other.content
    assert other.json()["error"]["code"] == "collection_not_found"
    assert other.json()["error"]["param"] == "rag.collection"
    assert "globex" not in other.text.lower()
    bodies = []
    for name in ("globex", "nope", "faq"):
        r = await gw.client.post(
            "/v1/retrieval/search",
            json={"collection": name, "query": "password"},
            headers=bearer("acme"),
        )
        assert r.status_code == 404
        bodies.append(r.content)
    assert len(set(bodies)) == 1
    own = await gw.chat("globex", model="robot", rag={"collection": "globex"})
    assert own.status_code == 200 and own.json()["citations"][0]["source"] == "globex.md"


async def test_policy_forces_retrieval_on_an_alias(
    gw: RagGateway, renderer: PromptRenderer
) -> None:
    r = await gw.chat("acme", model="support-bot")
    assert r.status_code == 200, r.text
    citations = r.json()["citations"]
    assert 1 <= len(citations) <= 2  # the policy's top_k
    sent = gw.engine.requests[-1]
    assert sent.adapter is not None and sent.adapter.name == "pirate"
    text = renderer.decode(sent.prompt_token_ids)
    # {sources} is filled inside the policy's own system message, which stays first
    start, end = SLOT_POLICY.split("{sources}")
    assert text.index(start) < text.index("<sources>") < text.index(end) < text.rindex(QUESTION)
    assert text.count("<sources>") == 1
    assert "ACME-BOT-POLICY" not in r.text and "reset button" not in r.text
    # a request's own rag adds collections and may change top_k
    r = await gw.chat("acme", model="support-bot", rag={"collection": "manuals", "top_k": 3})
    assert len(r.json()["citations"]) == 3


async def test_sources_are_trimmed_to_the_context_window(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    engine = FakeEngine(max_model_len=320)
    async for gw in start(fake_kit, tmp_path, renderer, engine, top_k=5):
        long_manual = "\n\n".join(
            f"## Reset step {i}\n\n" + "To reset the admin password press the button. " * 12
            for i in range(8)
        )
        assert (await upload(gw, "manuals", "long.md", f"# Long\n\n{long_manual}")).is_success
        r = await gw.chat("acme", rag={"collection": "manuals"}, max_tokens=40)
        assert r.status_code == 200, r.text
        sent = engine.requests[-1]
        assert len(sent.prompt_token_ids) + 40 <= 320
        assert len(sent.prompt_token_ids) > 200  # the room was used, not wasted
        citations = r.json()["citations"]
        assert 1 <= len(citations) < 5
        text = renderer.decode(sent.prompt_token_ids)
        assert f"[{len(citations)}]" in text and f"[{len(citations) + 1}]" not in text
        # no max_tokens: retrieval.completion_reserve (256) is kept for the answer, and a
        # prompt left with no room for sources gets none, but still an answer
        r = await gw.chat("acme", rag={"collection": "manuals"})
        assert r.status_code == 200 and r.json()["citations"] == []
        assert "No sources were found" in renderer.decode(engine.requests[-1].prompt_token_ids)


async def test_context_budget_caps_the_sources(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    engine = FakeEngine(max_model_len=4096)
    async for gw in start(fake_kit, tmp_path, renderer, engine, context_tokens=120):
        r = await gw.chat("acme", rag={"collection": "manuals", "top_k": 5}, max_tokens=10)
        assert r.status_code == 200, r.text
        text = renderer.decode(engine.requests[-1].prompt_token_ids)
        block = text[text.index("The numbered") : text.index("</sources>") + len("</sources>")]
        assert renderer.count(block) <= 120


async def test_openai_sdk_parses_citations_in_both_modes(gw: RagGateway) -> None:
    client = openai.AsyncOpenAI(
        base_url="http://gw/v1",
        api_key=KEYS["acme"].key,
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app)),
        max_retries=0,
    )
    completion = await client.chat.completions.create(
        model="tiny-base",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=3,
        extra_body={"rag": {"collection": "manuals", "top_k": 2}},
    )
    assert completion.choices[0].message.content
    extra = completion.model_extra or {}
    assert [c["number"] for c in extra["citations"]] == [1, 2]
    assert {c["chunk_id"] for c in extra["citations"]} <= await gw.chunk_ids("manuals")
    stream = await client.chat.completions.create(
        model="tiny-base",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=3,
        stream=True,
        extra_body={"rag": {"collection": "manuals", "top_k": 2}},
    )
    chunks = [chunk async for chunk in stream]
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert (final[-1].model_extra or {})["citations"] == extra["citations"]
    plain = await client.chat.completions.create(
        model="tiny-base", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert "citations" not in (plain.model_extra or {})
    await client.close()


async def test_bad_rag_options_are_refused(gw: RagGateway) -> None:
    r = await gw.chat("acme", rag={"collection": "manuals", "top_k": 500})
    assert r.status_code == 400 and r.json()["error"]["param"] == "rag.top_k"
    r = await gw.chat("acme", rag={"collection": "manuals", "mode": "fuzzy"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "rag.mode"
    r = await gw.chat("acme", rag={"collections": ["manuals"]})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("rag.collection")
    r = await gw.chat("acme", rag={"collection": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "rag.collection"
    assert gw.engine.requests == []


async def test_retrieval_time_is_measured(gw: RagGateway) -> None:
    await gw.chat("acme", rag={"collection": "manuals"})
    await gw.client.post(
        "/v1/retrieval/search",
        json={"collection": "manuals", "query": "firmware"},
        headers=bearer("acme"),
    )
    count = gw.state.metrics.registry.get_sample_value("loragate_retrieval_seconds_count")
    assert count == 2
    text = (await gw.client.get("/metrics", headers=bearer("admin"))).text
    assert (
        'loragate_requests_total{adapter="none",endpoint="retrieval",model="none",'
        'status_class="2xx",tenant="acme"} 1.0' in text
    )
