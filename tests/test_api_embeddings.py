"""``/v1/embeddings`` over ASGI with a fake engine and a fake embedder: the body OpenAI
sends, base64, token ids, every refusal, tenancy (visibility, the identical 404, TPM),
usage, metrics and the micro-batching of concurrent requests."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.rag.embeddings import served_embedder_id
from gateway.settings import RetrievalSettings, Settings
from gateway.settings.keys import generate_key
from gateway.state import GatewayState
from retrieval.embedding import normalize_rows
from retrieval.tokens import cl100k
from tests.conftest import FakeKit, fake_settings, run_fake_gateway
from tests.support.embedders import WordHashEmbedder
from tests.support.openai_schema import assert_openai_schema

MODEL = served_embedder_id(RetrievalSettings())  # the default embedder's served id
KEYS = {name: generate_key() for name in ("acme", "globex", "admin")}


class CountingEmbedder(WordHashEmbedder):
    """Records each call's texts and the thread it ran on."""

    def __init__(self, dimension: int = 64) -> None:
        super().__init__(dimension=dimension)
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.threads.add(threading.current_thread().name)
        return super().embed_documents(texts)


@dataclass
class Served:
    client: httpx.AsyncClient
    embedder: CountingEmbedder
    state: GatewayState


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role].key}"}


def tenants(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "acme": {
            "keys": [{"id": KEYS["acme"].key_id, "hash": KEYS["acme"].hash}],
            "models": ["tiny-base", MODEL],
        },
        "globex": {
            "keys": [{"id": KEYS["globex"].key_id, "hash": KEYS["globex"].hash}],
            "models": ["tiny-base"],
        },
    }
    base.update(overrides)
    return base


@pytest.fixture
def settings_for(fake_kit: FakeKit, tmp_path: Path) -> Any:
    made = iter(range(100))

    def build(**overrides: Any) -> Settings:
        data: dict[str, Any] = {
            "admin": {"keys": [{"id": KEYS["admin"].key_id, "hash": KEYS["admin"].hash}]},
            "tenants": tenants(),
            "retrieval": {"embed_batch_wait_ms": 0},
        }
        data.update(overrides)
        return fake_settings(fake_kit, tmp_path / f"registry{next(made)}", **data)

    return build


async def serve(
    settings: Settings, renderer: PromptRenderer, embedder: CountingEmbedder | None = None
) -> AsyncIterator[Served]:
    embedder = embedder or CountingEmbedder()
    async with run_fake_gateway(settings, renderer, embedder=embedder) as gw:
        state = gw.app.state.gateway
        yield Served(gw.client, embedder, state)


@pytest.fixture
async def served(settings_for: Any, renderer: PromptRenderer) -> AsyncIterator[Served]:
    async for s in serve(settings_for(), renderer):
        yield s


async def embed(served: Served, role: str = "acme", **body: Any) -> httpx.Response:
    return await served.client.post(
        "/v1/embeddings", json={"model": MODEL, **body}, headers=auth(role)
    )


def expected(texts: list[str], dimension: int = 64) -> np.ndarray:
    return WordHashEmbedder(dimension).embed_documents(texts)


def cl100k_tokens(texts: list[str]) -> int:
    return sum(len(cl100k().encode_ordinary(t)) for t in texts)


# --- the body ----------------------------------------------------------------------------


async def test_float_body_validates_and_equals_the_embedders_vectors(served: Served) -> None:
    texts = ["the coffee machine", "reset the router please"]
    r = await embed(served, input=texts, encoding_format="float")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_openai_schema(body, "CreateEmbeddingResponse")
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert {d["object"] for d in body["data"]} == {"embedding"}
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert np.array_equal(got, expected(texts))  # exact: float32 through JSON and back
    # An embedder without a tokenizer is counted in cl100k tokens.
    tokens = cl100k_tokens(texts)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


async def test_a_single_string_is_one_input_and_float_is_the_default(served: Served) -> None:
    r = await embed(served, input="the coffee machine")
    assert r.status_code == 200
    data = r.json()["data"]
    assert len(data) == 1 and isinstance(data[0]["embedding"], list)
    assert np.array_equal(np.float32(data[0]["embedding"]), expected(["the coffee machine"])[0])


async def test_base64_is_little_endian_float32_of_the_same_vectors(served: Served) -> None:
    texts = ["the coffee machine", "reset the router please"]
    floats = (await embed(served, input=texts)).json()
    r = await embed(served, input=texts, encoding_format="base64")
    assert r.status_code == 200
    for as_float, as_b64 in zip(floats["data"], r.json()["data"], strict=True):
        assert isinstance(as_b64["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(as_b64["embedding"]), dtype="<f4")
        assert decoded.shape == (64,)
        assert np.array_equal(decoded, np.float32(as_float["embedding"]))


async def test_token_ids_are_decoded_as_cl100k(served: Served) -> None:
    texts = ["the coffee machine", "reset the router please"]
    ids = [cl100k().encode_ordinary(t) for t in texts]
    as_text = (await embed(served, input=texts)).json()
    as_lists = await embed(served, input=ids)
    as_list = await embed(served, input=ids[1])
    assert as_lists.status_code == as_list.status_code == 200
    assert [d["embedding"] for d in as_lists.json()["data"]] == [
        d["embedding"] for d in as_text["data"]
    ]
    assert as_list.json()["data"][0]["embedding"] == as_text["data"][1]["embedding"]
    assert served.embedder.batches[-1] == [texts[1]]
    assert as_lists.json()["usage"] == as_text["usage"]


async def test_dimensions_only_the_native_size_unless_configured(
    served: Served, settings_for: Any, renderer: PromptRenderer
) -> None:
    assert (await embed(served, input="coffee", dimensions=64)).status_code == 200
    r = await embed(served, input="coffee", dimensions=32)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "dimensions" and "64" in error["message"]
    settings = settings_for(retrieval={"embed_batch_wait_ms": 0, "embedder_dimensions": [32, 16]})
    async for other in serve(settings, renderer):
        r = await embed(other, input=["coffee machine reset"], dimensions=32)
        assert r.status_code == 200
        vector = np.float32(r.json()["data"][0]["embedding"])
        cut = normalize_rows(expected(["coffee machine reset"])[:, :32])[0]
        assert vector.shape == (32,) and np.allclose(vector, cut, atol=1e-7)
        assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
        assert (await embed(other, input="coffee", dimensions=8)).status_code == 400


# --- refusals: each a 400 naming the parameter, or the identical 404 ---------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        [],
        [""],
        ["ok", ""],
        [[]],
        [[1, 2], []],
        ["text", 1],
        [1, [2]],
        [True, False],
        {"text": "x"},
        None,
        [1.5],
    ],
)
async def test_malformed_or_empty_input_is_a_400_naming_input(served: Served, value: Any) -> None:
    r = await embed(served, input=value)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "input"
    assert served.embedder.batches == []


@pytest.mark.parametrize("bad", [-1, 100256, 100257, 100276, 100277, 10**12])
async def test_token_ids_outside_cl100ks_ordinary_tokens_are_refused(
    served: Served, bad: int
) -> None:
    for value in ([1, bad], [[9906], [1, bad]]):
        r = await embed(served, input=value)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "input" and str(bad) in error["message"]
    assert served.embedder.batches == []


async def test_missing_model_and_unknown_fields_are_400s(served: Served) -> None:
    r = await served.client.post("/v1/embeddings", json={"input": "x"}, headers=auth("acme"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = await embed(served, input="x", encoding_format="int8")
    assert r.status_code == 400 and r.json()["error"]["param"] == "encoding_format"
    r = await embed(served, input="x", truncate=True)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_parameter"
    r = await embed(served, input="x", dimensions=0)
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


async def test_input_count_and_length_bounds(settings_for: Any, renderer: PromptRenderer) -> None:
    settings = settings_for(limits={"max_embedding_inputs": 3, "max_embedding_input_tokens": 5})
    async for served in serve(settings, renderer):
        assert (await embed(served, input=["a", "b", "c"])).status_code == 200
        r = await embed(served, input=["a", "b", "c", "d"])
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "input" and "3" in r.json()["error"]["message"]
        five = "one two three four five"
        assert cl100k_tokens([five]) == 5
        assert (await embed(served, input=five)).status_code == 200
        r = await embed(served, input=["fine", five + " six"])
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["param"] == "input" and "Input 1 has 6 tokens" in error["message"]
        ids = cl100k().encode_ordinary(five + " six")
        assert (await embed(served, input=ids)).status_code == 400
        calls = len(served.embedder.batches)
        assert calls == 2  # the refused requests never reached the embedder


async def test_unknown_and_forbidden_models_get_the_identical_404(served: Served) -> None:
    forbidden = await embed(served, "globex", input="x")  # globex's models lack the embedder
    unknown = await served.client.post(
        "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "x"},
        headers=auth("acme"),
    )
    chat_model = await served.client.post(
        "/v1/embeddings", json={"model": "tiny-base", "input": "x"}, headers=auth("acme")
    )
    assert forbidden.status_code == unknown.status_code == chat_model.status_code == 404
    assert forbidden.content == unknown.content == chat_model.content
    assert forbidden.json()["error"]["code"] == "model_not_found"
    r = await served.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers=auth("acme"),
    )
    assert r.status_code == 404  # the embedder is no chat model
    assert served.embedder.batches == []


async def test_authentication_is_required(served: Served) -> None:
    r = await served.client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    assert r.status_code == 401
    bad = {"Authorization": "Bearer sk-nope"}
    r = await served.client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}, headers=bad)
    assert r.status_code == 401


async def test_models_lists_the_embedder_only_for_callers_allowed_to_use_it(
    served: Served,
) -> None:
    async def ids(role: str) -> set[str]:
        r = await served.client.get("/v1/models", headers=auth(role))
        return {m["id"] for m in r.json()["data"]}

    assert MODEL in await ids("acme")
    assert MODEL not in await ids("globex")
    assert MODEL in await ids("admin")
    r = await served.client.get(f"/v1/models/{MODEL}", headers=auth("acme"))
    assert r.status_code == 200 and r.json()["id"] == MODEL
    r = await served.client.get(f"/v1/models/{MODEL}", headers=auth("admin"))
    assert r.status_code == 200 and r.json()["id"] == MODEL
    hidden = await served.client.get(f"/v1/models/{MODEL}", headers=auth("globex"))
    unknown = await served.client.get("/v1/models/nope", headers=auth("globex"))
    assert hidden.status_code == 404 and hidden.content == unknown.content
    assert (await embed(served, "admin", input="x")).status_code == 200


async def test_an_alias_and_a_wildcard_reach_the_embedder(
    settings_for: Any, renderer: PromptRenderer
) -> None:
    settings = settings_for(
        tenants=tenants(
            globex={
                "keys": [{"id": KEYS["globex"].key_id, "hash": KEYS["globex"].hash}],
                "models": ["*"],
                "aliases": {"vectors": {"model": MODEL}},
            }
        )
    )
    async for served in serve(settings, renderer):
        assert (await embed(served, "globex", input="x")).status_code == 200
        r = await served.client.post(
            "/v1/embeddings", json={"model": "vectors", "input": "x"}, headers=auth("globex")
        )
        assert r.status_code == 200 and r.json()["model"] == "vectors"


# --- limits, usage, metrics ----------------------------------------------------------------


async def test_tpm_counts_the_input_tokens(settings_for: Any, renderer: PromptRenderer) -> None:
    acme = {
        "keys": [{"id": KEYS["acme"].key_id, "hash": KEYS["acme"].hash}],
        "models": [MODEL],
        "rate_limit": {"tokens_per_minute": 10},
    }
    async for served in serve(settings_for(tenants=tenants(acme=acme)), renderer):
        six = "one two three four five six"
        assert (await embed(served, input=six)).status_code == 200
        r = await embed(served, input=six)  # 12 > 10 tokens in this minute
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        assert len(served.embedder.batches) == 1
        assert (await embed(served, input="one two three")).status_code == 200  # 9 <= 10


async def test_usage_and_metrics_are_recorded(served: Served) -> None:
    texts = ["one two three", "four five"]
    assert (await embed(served, input=texts)).status_code == 200
    served.state.usage.flush()
    rows = served.state.usage.query(tenant="acme")
    assert [(r.model, r.prompt_tokens, r.completion_tokens, r.requests) for r in rows] == [
        (MODEL, 5, 0, 1)
    ]
    metrics = served.state.metrics
    labels = {"tenant": "acme", "model": MODEL, "adapter": "none", "endpoint": "embeddings"}
    ok = metrics.registry.get_sample_value(
        "loragate_requests_total", {**labels, "status_class": "2xx"}
    )
    assert ok == 1
    tokens = metrics.registry.get_sample_value(
        "loragate_prompt_tokens_total", {"tenant": "acme", "adapter": "none"}
    )
    assert tokens == 5
    assert metrics.registry.get_sample_value("loragate_embedding_batch_inputs_count") == 1
    assert metrics.registry.get_sample_value("loragate_embedding_batch_inputs_sum") == 2
    await embed(served, "globex", input="x")
    refused = metrics.registry.get_sample_value(
        "loragate_requests_total",
        {
            "tenant": "globex",
            "model": MODEL,
            "adapter": "none",
            "endpoint": "embeddings",
            "status_class": "4xx",
        },
    )
    assert refused == 1


async def test_an_embedder_that_cannot_load_is_a_503(
    settings_for: Any, renderer: PromptRenderer, tmp_path: Path
) -> None:
    settings = settings_for(retrieval={"embedder_dir": str(tmp_path / "missing")})
    async with run_fake_gateway(settings, renderer) as gw:
        r = await gw.client.post(
            "/v1/embeddings", json={"model": "missing", "input": "x"}, headers=auth("admin")
        )
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "retrieval_unavailable"


# --- batching -------------------------------------------------------------------------------


async def test_concurrent_requests_share_one_embedder_call_off_the_event_loop(
    settings_for: Any, renderer: PromptRenderer
) -> None:
    settings = settings_for(retrieval={"embed_batch_wait_ms": 100})
    async for served in serve(settings, renderer):
        a, b = await asyncio.gather(
            embed(served, input=["first request", "its second input"]),
            embed(served, input="second request"),
        )
        assert a.status_code == b.status_code == 200
        assert len(served.embedder.batches) == 1
        assert sorted(served.embedder.batches[0]) == sorted(
            ["first request", "its second input", "second request"]
        )
        # each got its own vectors back, in its own order
        vectors_a = np.float32([d["embedding"] for d in a.json()["data"]])
        assert np.array_equal(vectors_a, expected(["first request", "its second input"]))
        vector_b = np.float32(b.json()["data"][0]["embedding"])
        assert np.array_equal(vector_b, expected(["second request"])[0])
        assert served.embedder.threads == {"embed_0"}  # the batcher's thread, not the loop's
