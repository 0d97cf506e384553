"""RAG with the real engine and the real MiniLM embedder, through uvicorn on loopback:
ingest over the admin API, then citations in both response modes."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from tests.support.engine_fixtures import LIVE_ADMIN_KEY, LiveGateway
from tests.support.sse import parse_sse

pytestmark = pytest.mark.engine

ADMIN = {"Authorization": f"Bearer {LIVE_ADMIN_KEY}"}
MANUAL = """# Acme Router Manual

## Resetting the admin password

If you forgot the admin password, hold the recessed reset button on the back for ten
seconds while the router is powered on. The password returns to the factory default.

## Firmware updates

Firmware updates are downloaded from the vendor portal and uploaded on the maintenance page.
"""
QUESTION = "How do I reset the admin password I forgot?"


def test_citations_in_both_modes_with_the_real_engine_and_embedder(
    live_gateway: LiveGateway,
) -> None:
    with httpx.Client(base_url=live_gateway.base_url, timeout=300) as client:
        r = client.post(
            "/admin/collections/live-manuals/documents",
            files={"file": ("router.md", MANUAL.encode(), "text/markdown")},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["status"] in ("added", "unchanged")
        found = client.post(
            "/v1/retrieval/search",
            json={"collection": "live-manuals", "query": QUESTION, "mode": "dense"},
        ).json()["data"]
        assert "reset button" in found[0]["text"]
        chunk_ids = {hit["chunk_id"] for hit in found}
        body = {
            "model": "tiny-llama",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 6,
            "temperature": 0,
            "rag": {"collection": "live-manuals", "top_k": 2},
        }
        plain = client.post("/v1/chat/completions", json=body)
        assert plain.status_code == 200, plain.text
        citations = plain.json()["citations"]
        assert [c["number"] for c in citations] == [1, 2]
        assert {c["chunk_id"] for c in citations} <= chunk_ids
        assert plain.json()["usage"]["prompt_tokens"] > 100  # the sources are in the prompt
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
        events = parse_sse(streamed.text)
        assert events[-1] == "[DONE]"
        final = [e for e in events[:-1] if "citations" in e]
        assert len(final) == 1 and final[0]["choices"][0]["finish_reason"] is not None
        assert final[0]["citations"] == citations
    sdk = OpenAI(base_url=live_gateway.base_url + "/v1", api_key="unused", max_retries=0)
    completion = sdk.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=4,
        extra_body={"rag": {"collection": "live-manuals", "top_k": 2}},
    )
    assert (completion.model_extra or {})["citations"] == citations
