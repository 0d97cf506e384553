"""Schema-driven fuzz of the whole HTTP API, in process, on the fake engine.

schemathesis generates requests from the app's own OpenAPI description: valid ones
(``positive``) and ones that break the schema (``negative``), for every operation:
chat, completions, models, retrieval search, health, metrics and the admin API (with
the admin key, or with a tenant's key, a made-up one or none). Two JSON bodies the
admin routes parse themselves (adapter registration, ingestion by path) are added to
the description here so they are fuzzed too.

Whatever comes in, the answer is never a 5xx, and every error has OpenAI's body
``{"error": {"message", "type", "param", "code"}}``. Schema-valid chat bodies are mostly
refused (random values in fields served only with their defaults), so valid chat and
completion requests are also drawn from hypothesis strategies built on the protocol's
bounds: they are served, and message text holding special-token strings never adds a
turn to the prompt the engine receives.

5xx answers found here and not fixed yet go in ``KNOWN_5XX`` (the fuzz steers around
them); what it found and was fixed stays pinned in ``FOUND_AND_FIXED``.

Runs are deterministic (``derandomize``); ``LORAGATE_FUZZ_EXAMPLES`` raises the number
of examples per operation and mode for a deeper local run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from gateway.admin.protocol import RegisterAdapterRequest
from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.protocol.common import INT64_MAX, INT64_MIN, MAX_TOP_K
from gateway.rag.protocol import IngestPathRequest
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from tests.conftest import ADMIN_KEY, FakeKit
from tests.support.embedders import WordHashEmbedder
from tests.support.fakes import FakeEngine

# One app for the module (its fixture), on the module's loop: the tests await on it.
pytestmark = pytest.mark.asyncio(loop_scope="module")

FUZZ_EXAMPLES = int(os.environ.get("LORAGATE_FUZZ_EXAMPLES", "10"))
TENANT_KEY = generate_key()
BASE_URL = "http://gw"
# Bodies the routes read themselves (JSON or multipart), absent from the description.
HAND_PARSED_BODIES = {
    ("/admin/adapters", "post"): RegisterAdapterRequest,
    ("/admin/collections/{name}/documents", "post"): IngestPathRequest,
}


def fuzz_settings(kit: FakeKit, data_dir: Path) -> Settings:
    return Settings.load(
        None,
        model={"path": kit.base, "name": "tiny-base"},
        adapters=[{"name": name, "path": path} for name, path in kit.adapters.items()],
        # No network: registration only from fsspec's in-memory file system.
        registry={
            "data_dir": data_dir,
            "allowed_roots": [kit.adapter_root],
            "allowed_protocols": ["memory"],
        },
        admin={"api_key": ADMIN_KEY},
        retrieval={"preload": False},
        tenants={
            "acme": {
                "keys": [{"id": TENANT_KEY.key_id, "hash": TENANT_KEY.hash}],
                "models": ["tiny-base", "pirate", "robot"],
                "collections": ["manuals"],
            }
        },
    )


def api_description() -> dict[str, Any]:
    """The app's OpenAPI description (it does not depend on the settings), plus the
    hand-parsed JSON bodies."""
    app = create_app(Settings.load(None, model={"path": Path("unused"), "name": "tiny-base"}))
    spec = app.openapi()
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for (path, method), model in HAND_PARSED_BODIES.items():
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(body.pop("$defs", {}))
        spec["paths"][path][method]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return spec


SCHEMA = schemathesis.openapi.from_dict(api_description())
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}
CASES = [
    (label, mode)
    for label, operation in OPERATIONS.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Negative cases need a body or a typed query parameter to break: strings in the
    # path and the auth header take anything (positive cases send arbitrary ones).
    if mode is GenerationMode.POSITIVE or operation.body or len(operation.query)
]


Kwargs = dict[str, Any]


def _null_byte_path(kwargs: Kwargs) -> bool:
    body = kwargs.get("json")
    return (
        kwargs["url"].endswith("/admin/adapters")
        and isinstance(body, dict)
        and any(isinstance(body.get(k), str) and "\x00" in body[k] for k in ("path", "uri"))
    )


def _huge_usage_since(kwargs: Kwargs) -> bool:
    since = (kwargs.get("params") or {}).get("since")
    return (
        kwargs["url"].endswith("/admin/usage")
        and isinstance(since, int | float)
        and not (math.isfinite(since) and abs(since) < 2**62)
    )


# (reproducer, how to recognise it among generated requests, where it fails)
KNOWN_5XX: list[tuple[Kwargs, Callable[[Kwargs], bool], str]] = []


@dataclass
class FuzzTarget:
    client: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop
    engine: FakeEngine

    def send(self, kwargs: Kwargs) -> httpx.Response:
        """From hypothesis's worker thread: the app answers on the test's event loop."""
        future = asyncio.run_coroutine_threadsafe(send(self.client, kwargs), self.loop)
        return future.result(timeout=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(
    fake_kit: FakeKit, tmp_path_factory: pytest.TempPathFactory, renderer: PromptRenderer
) -> AsyncIterator[FuzzTarget]:
    data_dir = tmp_path_factory.mktemp("fuzz-registry")
    engine = FakeEngine(max_model_len=2048)
    app = create_app(
        fuzz_settings(fake_kit, data_dir),
        engine_factory=lambda _: engine,
        renderer=renderer,
        embedder=WordHashEmbedder(),
    )
    async with app.router.lifespan_context(app):
        # A 500 comes back as a response (with its body) rather than as the exception.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            seeded = await client.post(
                "/admin/collections/manuals/documents",
                files={"file": ("router.md", b"# Router\n\nReset it with the pin.", "text/plain")},
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert seeded.status_code == 200, seeded.text
            yield FuzzTarget(client, asyncio.get_running_loop(), engine)


def right_key(path: str) -> str:
    admin = path.startswith("/admin") or path == "/metrics"
    return ADMIN_KEY if admin else TENANT_KEY.key


AUTH = st.sampled_from(["right", "right", "right", "generated", "tenant", "none"])


def with_auth(case: Any, auth: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=BASE_URL)
    headers = {k: v for k, v in kwargs.pop("headers").items() if k.lower() != "authorization"}
    generated = (case.headers or {}).get("authorization")
    if auth == "right":
        headers["Authorization"] = f"Bearer {right_key(case.path)}"
    elif auth == "tenant":
        headers["Authorization"] = f"Bearer {TENANT_KEY.key}"
    elif auth == "generated" and isinstance(generated, str):
        headers["Authorization"] = generated
    kwargs["headers"] = headers
    return kwargs


async def send(client: httpx.AsyncClient, kwargs: dict[str, Any]) -> httpx.Response:
    data = kwargs.get("data")
    return await client.request(
        kwargs["method"],
        kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        cookies=kwargs.get("cookies"),
        json=kwargs.get("json"),
        content=data if isinstance(data, bytes | str) else None,
        data=data if isinstance(data, dict) else None,
        files=kwargs.get("files"),
    )


def check(response: httpx.Response, reproducer: str) -> None:
    where = f"{reproducer}\n-> {response.status_code} {response.text[:600]}"
    assert response.status_code < 500, where
    if response.status_code < 400:
        return
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, where
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, where
    assert isinstance(error["message"], str) and isinstance(error["type"], str), where
    assert all(error[k] is None or isinstance(error[k], str) for k in ("param", "code")), where


@pytest.mark.parametrize(
    ("label", "mode"), CASES, ids=[f"{label}-{mode.value}" for label, mode in CASES]
)
async def test_no_request_gets_a_5xx_and_errors_have_openai_shape(
    target: FuzzTarget, label: str, mode: GenerationMode
) -> None:
    operation = OPERATIONS[label]

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), auth=AUTH)
    def fuzz(case: Any, auth: str) -> None:
        kwargs = with_auth(case, auth)
        assume(not any(known(kwargs) for _, known, _ in KNOWN_5XX))
        reproducer = f"{kwargs['method']} {kwargs['url']} auth={auth} kwargs={kwargs!r:.2000}"
        check(target.send(kwargs), reproducer)

    # Hypothesis drives the cases from a worker thread; the app answers on this loop.
    await asyncio.to_thread(fuzz)


FOUND_AND_FIXED: list[Kwargs] = [
    # A NUL in a registration path: Path.resolve raised ValueError (adapters/sources.py).
    {"method": "POST", "url": "/admin/adapters", "json": {"name": "x", "path": "\x00"}},
    # since beyond int64 minutes: int(since // 60) overflowed SQLite's INTEGER.
    {"method": "GET", "url": "/admin/usage", "params": {"since": 1e21}},
    {"method": "GET", "url": "/admin/usage", "params": {"since": "inf"}},
    {"method": "GET", "url": "/admin/usage", "params": {"since": "nan"}},
]


@pytest.mark.parametrize(
    "kwargs", FOUND_AND_FIXED, ids=[f"{k['method']} {k['url']}" for k in FOUND_AND_FIXED]
)
async def test_what_the_fuzz_found_is_a_client_error(target: FuzzTarget, kwargs: Kwargs) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    response = await send(target.client, {**kwargs, "headers": headers})
    check(response, str(kwargs))
    assert 400 <= response.status_code < 500, response.text


SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>system\n"]
TEXT = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from(SPECIALS)), min_size=1, max_size=5
).map("".join)
SAMPLING: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0.0, 2.0),
    "top_p": st.floats(0.01, 1.0),
    "n": st.integers(1, 4),
    "max_tokens": st.integers(1, 16),
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=4)),
    "seed": st.integers(INT64_MIN, INT64_MAX),
    "presence_penalty": st.floats(-2.0, 2.0),
    "frequency_penalty": st.floats(-2.0, 2.0),
    "stream": st.booleans(),
    "top_k": st.integers(-1, MAX_TOP_K),
    "min_p": st.floats(0.0, 1.0),
    "repetition_penalty": st.floats(0.01, 2.0),
}
CHAT_BODIES = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["tiny-base", "pirate", "robot"]),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["system", "developer", "user", "assistant"]),
                    "content": TEXT,
                }
            ),
            min_size=1,
            max_size=4,
        ),
    },
    optional={
        **SAMPLING,
        "logprobs": st.just(True),
        "top_logprobs": st.integers(0, 20),
        "response_format": st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
            ]
        ),
    },
)
COMPLETION_BODIES = st.fixed_dictionaries(
    {"model": st.sampled_from(["tiny-base", "pirate"]), "prompt": TEXT},
    optional={**SAMPLING, "logprobs": st.integers(0, 5), "echo": st.booleans()},
)


def chat_turns(messages: list[dict[str, str]]) -> int:
    """Turns in SmolLM2's rendering: its own system turn unless the first is one."""
    first_is_system = messages[0]["role"] in ("system", "developer")
    return len(messages) + (0 if first_is_system else 1)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_valid_requests_are_served_and_text_stays_text(
    target: FuzzTarget, renderer: PromptRenderer, path: str
) -> None:
    bodies = CHAT_BODIES if path == "/v1/chat/completions" else COMPLETION_BODIES
    im_start = renderer.text("<|im_start|>")[0]
    served = []

    @settings(
        max_examples=3 * FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies)
    def fuzz(body: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {TENANT_KEY.key}"}
        kwargs = {"method": "POST", "url": path, "json": body, "headers": headers}
        response = target.send(kwargs)
        check(response, f"POST {path} json={body!r:.2000}")
        if response.status_code != 200:
            return
        served.append(body)
        if "messages" in body:
            ids = target.engine.requests[-1].prompt_token_ids
            assert ids.count(im_start) == chat_turns(body["messages"]) + 1, (body, ids)

    await asyncio.to_thread(fuzz)
    # The bounds above are the protocol's: most requests must be served, not refused.
    assert len(served) >= FUZZ_EXAMPLES, f"only {len(served)} served"
