"""``/v1/responses`` over ASGI with a fake engine: create, stream, store, chain, tenancy,
citations and every refusal; each body and event checked against OpenAI's schema."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from gateway.state import GatewayState
from tests.conftest import FakeKit
from tests.support.embedders import WordHashEmbedder
from tests.support.fakes import FakeEngine
from tests.support.openai_schema import assert_openai_schema

KEYS = {name: generate_key() for name in ("acme", "globex", "admin")}
MANUAL = """# Acme Router Manual

## Resetting the admin password

If you forgot the admin password, hold the reset button on the back for ten seconds.
"""


def config(kit: FakeKit, data_dir: Path) -> dict[str, Any]:
    def key(name: str) -> list[dict[str, str]]:
        return [{"id": KEYS[name].key_id, "hash": KEYS[name].hash}]

    return {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "adapters": [{"name": n, "path": str(p)} for n, p in kit.adapters.items()],
        "registry": {"data_dir": str(data_dir)},
        "admin": {"keys": key("admin")},
        "retrieval": {"top_k": 2, "preload": False},
        "limits": {"max_messages": 8},
        "tenants": {
            "acme": {"keys": key("acme"), "models": ["tiny-base"], "collections": ["manuals"]},
            "globex": {"keys": key("globex"), "models": ["tiny-base", "robot"]},
        },
    }


@dataclass
class Gateway:
    client: httpx.AsyncClient
    engine: FakeEngine
    state: GatewayState

    async def create(self, who: str = "acme", **body: Any) -> httpx.Response:
        payload = {"model": "tiny-base", "input": "Hello", **body}
        return await self.client.post("/v1/responses", json=payload, headers=bearer(who))

    async def get(self, path: str, who: str = "acme") -> httpx.Response:
        return await self.client.get(path, headers=bearer(who))

    async def delete(self, path: str, who: str = "acme") -> httpx.Response:
        return await self.client.delete(path, headers=bearer(who))


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who].key}"}


@pytest.fixture
async def gw(fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer) -> AsyncIterator[Gateway]:
    path = tmp_path / "loragate.yaml"
    path.write_text(yaml.safe_dump(config(fake_kit, tmp_path / "data")))
    engine = FakeEngine()
    app = create_app(
        Settings.load(path),
        engine_factory=lambda _: engine,
        renderer=renderer,
        embedder=WordHashEmbedder(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Gateway(client, engine, app.state.gateway)


def parse_events(body: str) -> list[dict[str, Any]]:
    """``event: <type>`` + ``data: <json>`` blocks; the two must agree."""
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        kind, data = block.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: "), block
        event = json.loads(data[len("data: ") :])
        assert event["type"] == kind[len("event: ") :]
        events.append(event)
    return events


# ----------------------------------------------------------------------------- create


async def test_string_input_gives_a_response_object(gw: Gateway, renderer: PromptRenderer) -> None:
    r = await gw.create(max_output_tokens=3, metadata={"ticket": "42"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_openai_schema(body, "Response")
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert (body["status"], body["model"], body["store"]) == ("incomplete", "tiny-base", True)
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["metadata"] == {"ticket": "42"} and body["max_output_tokens"] == 3
    (item,) = body["output"]
    assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "incomplete")
    assert item["id"].startswith("msg_")
    assert item["content"] == [
        {"type": "output_text", "text": "base0w0 base0w1 base0w2 ", "annotations": [],
         "logprobs": []}
    ]  # fmt: skip
    prompt = renderer.chat([{"role": "user", "content": "Hello"}])
    (req,) = gw.engine.requests
    assert req.prompt_token_ids == prompt and req.params.max_tokens == 3
    usage = body["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (len(prompt), 3)
    assert usage["total_tokens"] == len(prompt) + 3


async def test_items_and_instructions_become_the_conversation(
    gw: Gateway, renderer: PromptRenderer
) -> None:
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
        {"role": "user", "content": "What now?"},
    ]
    r = await gw.create(input=items, instructions="You are Acme's bot.", temperature=0.2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_openai_schema(body, "Response")
    assert body["status"] == "completed" and body["completed_at"] >= body["created_at"]
    assert body["instructions"] == "You are Acme's bot." and body["temperature"] == 0.2
    (req,) = gw.engine.requests
    assert req.prompt_token_ids == renderer.chat(
        [
            {"role": "system", "content": "You are Acme's bot."},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "What now?"},
        ]
    )
    assert req.params.temperature == 0.2


async def test_text_format_json_schema_constrains_the_engine(gw: Gateway) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    r = await gw.create(text={"format": fmt})
    assert r.status_code == 200, r.text
    assert_openai_schema(r.json(), "Response")
    assert r.json()["text"]["format"]["name"] == "thing"
    so = gw.engine.requests[0].params.structured_output
    assert so is not None and so.kind == "json_schema" and so.json_schema == schema


# ----------------------------------------------------------------------------- stream


async def test_stream_sends_openai_event_sequence(gw: Gateway) -> None:
    r = await gw.create(stream=True, max_output_tokens=4)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_events(r.text)
    for event in events:
        assert_openai_schema(event, "ResponseStreamEvent")
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == [] and "usage" not in events[0]["response"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "base0w0 base0w1 base0w2 base0w3 "
    assert events[-4]["text"] == deltas
    item_id = events[2]["item"]["id"]
    assert {e["item_id"] for e in events[3:-2]} == {item_id}
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == deltas
    assert final["usage"]["output_tokens"] == 4
    stored = await gw.get(f"/v1/responses/{final['id']}")
    assert stored.status_code == 200 and stored.json() == final


async def test_stream_to_the_end_completes(gw: Gateway) -> None:
    events = parse_events((await gw.create(stream=True)).text)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["status"] == "completed"


async def test_failure_mid_stream_is_response_failed(gw: Gateway) -> None:
    gw.engine.fail_after_tokens = 2
    events = parse_events((await gw.create(stream=True)).text)
    for event in events:
        assert_openai_schema(event, "ResponseStreamEvent")
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    rid = events[-1]["response"]["id"]
    assert (await gw.get(f"/v1/responses/{rid}")).status_code == 404  # never stored


async def test_failure_before_the_first_token_is_a_plain_error(gw: Gateway) -> None:
    gw.engine.fail_after_tokens = 0
    r = await gw.create(stream=True)
    assert r.status_code == 500 and r.json()["error"]["code"] == "engine_error"


# -------------------------------------------------------------- retrieve, delete, items


async def test_retrieve_input_items_and_delete(gw: Gateway) -> None:
    items = [{"role": "user", "content": f"turn {i}"} for i in range(3)]
    created = (await gw.create(input=items, instructions="x")).json()
    rid = created["id"]
    got = await gw.get(f"/v1/responses/{rid}")
    assert got.status_code == 200 and got.json() == created
    listed = (await gw.get(f"/v1/responses/{rid}/input_items")).json()
    assert_openai_schema(listed, "ResponseItemList")
    texts = [i["content"][0]["text"] for i in listed["data"]]
    assert texts == ["turn 2", "turn 1", "turn 0"]  # newest first, instructions not an item
    assert (listed["first_id"], listed["last_id"]) == (listed["data"][0]["id"],
                                                      listed["data"][-1]["id"])  # fmt: skip
    page = (await gw.get(f"/v1/responses/{rid}/input_items?order=asc&limit=2")).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["turn 0", "turn 1"]
    assert page["has_more"] is True
    after = page["last_id"]
    rest = (await gw.get(f"/v1/responses/{rid}/input_items?order=asc&after={after}")).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["turn 2"]
    assert rest["has_more"] is False
    deleted = await gw.delete(f"/v1/responses/{rid}")
    assert deleted.json() == {"id": rid, "object": "response.deleted", "deleted": True}
    for r in (
        await gw.get(f"/v1/responses/{rid}"),
        await gw.delete(f"/v1/responses/{rid}"),
        await gw.get(f"/v1/responses/{rid}/input_items"),
    ):
        assert r.status_code == 404


async def test_store_false_keeps_nothing(gw: Gateway) -> None:
    for stream in (False, True):
        r = await gw.create(store=False, stream=stream)
        body = r.json() if not stream else parse_events(r.text)[-1]["response"]
        assert body["store"] is False
        assert (await gw.get(f"/v1/responses/{body['id']}")).status_code == 404
        chained = await gw.create(previous_response_id=body["id"])
        assert chained.status_code == 404
        assert chained.json()["error"]["param"] == "previous_response_id"


async def test_another_tenants_response_is_the_same_404_as_an_unknown_one(gw: Gateway) -> None:
    rid = (await gw.create()).json()["id"]
    theirs = [
        await gw.get(f"/v1/responses/{rid}", who="globex"),
        await gw.get(f"/v1/responses/{rid}/input_items", who="globex"),
        await gw.delete(f"/v1/responses/{rid}", who="globex"),
    ]
    chained = await gw.create(who="globex", previous_response_id=rid)
    assert (await gw.get(f"/v1/responses/{rid}")).status_code == 200  # still acme's
    await gw.delete(f"/v1/responses/{rid}")
    unknown = [
        await gw.get(f"/v1/responses/{rid}"),
        await gw.get(f"/v1/responses/{rid}/input_items"),
        await gw.delete(f"/v1/responses/{rid}"),
    ]
    for mine, other in zip(unknown, theirs, strict=True):
        assert (other.status_code, other.content) == (404, mine.content)
    unknown_chain = await gw.create(previous_response_id=rid)
    assert (chained.status_code, chained.content) == (404, unknown_chain.content)


# ----------------------------------------------------------------------------- chains


async def test_previous_response_id_continues_the_conversation(
    gw: Gateway, renderer: PromptRenderer
) -> None:
    first = (await gw.create(input="Hi", instructions="Old rules.", max_output_tokens=2)).json()
    second = await gw.create(input="And then?", previous_response_id=first["id"])
    assert second.status_code == 200, second.text
    assert second.json()["previous_response_id"] == first["id"]
    assert_openai_schema(second.json(), "Response")
    turn1 = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "base0w0 base0w1 "},
    ]
    # Instructions are not carried over (as OpenAI): only the turns.
    expected = renderer.chat([*turn1, {"role": "user", "content": "And then?"}])
    assert gw.engine.requests[1].prompt_token_ids == expected
    third = await gw.create(
        input="Last.", instructions="New rules.", previous_response_id=second.json()["id"]
    )
    out2 = second.json()["output"][0]["content"][0]["text"]
    assert gw.engine.requests[2].prompt_token_ids == renderer.chat(
        [
            {"role": "system", "content": "New rules."},
            *turn1,
            {"role": "user", "content": "And then?"},
            {"role": "assistant", "content": out2},
            {"role": "user", "content": "Last."},
        ]
    )
    # input_items lists the request's own input only.
    items = (await gw.get(f"/v1/responses/{third.json()['id']}/input_items")).json()["data"]
    assert [i["content"][0]["text"] for i in items] == ["Last."]


async def test_a_chain_longer_than_the_context_is_the_usual_400(gw: Gateway) -> None:
    long = "word " * 150  # the fake engine's context: 256 tokens
    first = (await gw.create(input=long, max_output_tokens=2)).json()
    r = await gw.create(input=long, previous_response_id=first["id"])
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "input"


async def test_what_a_stored_response_may_hold_is_bounded(gw: Gateway) -> None:
    gw.state.settings.responses.max_stored_bytes = 1024
    r = await gw.create(input="hello " * 150)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert "store: false" in r.json()["error"]["message"]
    r = await gw.create(input="hello " * 150, store=False, max_output_tokens=2)
    assert r.status_code == 200, r.text
    first = (await gw.create(input="hello " * 60, max_output_tokens=2)).json()
    r = await gw.create(input="hello " * 60, previous_response_id=first["id"])
    assert r.status_code == 400 and r.json()["error"]["param"] == "previous_response_id"


# ------------------------------------------------------------------------------ RAG


async def test_rag_sources_are_file_citation_annotations(gw: Gateway) -> None:
    r = await gw.client.post(
        "/admin/collections/manuals/documents",
        files={"file": ("router.md", MANUAL.encode(), "text/markdown")},
        headers=bearer("admin"),
    )
    assert r.status_code == 200, r.text
    q = "How do I reset the admin password?"
    body = (await gw.create(input=q, rag={"collection": "manuals"}, max_output_tokens=8)).json()
    assert_openai_schema(body, "Response")
    (annotation, *_) = body["output"][0]["content"][0]["annotations"]
    assert annotation["type"] == "file_citation" and annotation["filename"] == "router.md"
    assert annotation["file_id"] and annotation["index"] >= 0
    streamed = await gw.create(
        input=q, rag={"collection": "manuals"}, max_output_tokens=8, stream=True
    )
    events = parse_events(streamed.text)
    for event in events:
        assert_openai_schema(event, "ResponseStreamEvent")
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert added and added[0]["annotation"]["filename"] == "router.md"
    other = await gw.create(who="globex", input=q, rag={"collection": "manuals"})
    assert other.status_code in (403, 404) and other.json()["error"]["param"] == "rag.collection"


# ------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"include": ["file_search_call.results"]}, "include"),
        ({"truncation": "auto"}, "truncation"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"text": {"verbosity": "high"}}, "text.verbosity"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "web_search_preview"}, "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object"}}]}, "tool_choice"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "input[0].content[0]"),
        ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"input": []}, "input"),
        ({"input": [{"role": "user", "content": "x"}] * 9}, "input"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"max_output_tokens": 10_000}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"previous_response_id": "resp_unknown"}, "previous_response_id"),
    ],
)  # fmt: skip
async def test_refusals_name_the_parameter(gw: Gateway, fields: dict[str, Any], param: str) -> None:
    r = await gw.create(**fields)
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["param"] == param, r.json()
    assert not gw.engine.requests


# ------------------------------------------------------------------ usage and metrics


async def test_usage_and_metrics_come_from_the_pipeline(gw: Gateway) -> None:
    await gw.create(max_output_tokens=3)
    rows = gw.state.usage.query(tenant="acme")
    assert [(r.requests, r.completion_tokens) for r in rows] == [(1, 3)]
    metrics = gw.state.metrics
    value = metrics.registry.get_sample_value(
        "loragate_requests_total",
        {"tenant": "acme", "model": "tiny-base", "adapter": "none", "endpoint": "responses",
         "status_class": "2xx"},
    )  # fmt: skip
    assert value == 1
