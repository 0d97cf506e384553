"""End-to-end: the official OpenAI SDK against the session's real gateway (uvicorn on
loopback, in-process vLLM engine), with a tenant whose daily budget runs out: the SDK
raises ``openai.RateLimitError`` with code ``insufficient_quota``, and 32 concurrent
requests never get more tokens than the budget holds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from gateway.settings.keys import generate_key
from gateway.settings.tenancy import TenancyConfig
from tests.support.engine_fixtures import LIVE_ADMIN_KEY, LiveGateway

pytestmark = pytest.mark.engine

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name three colours."}]


@dataclass
class Budgeted:
    live: LiveGateway
    tenant: str
    key: str

    def usage(self) -> tuple[int, int, float]:
        """(requests, tokens, cost) the gateway recorded for the tenant."""
        r = httpx.get(
            f"{self.live.base_url}/admin/usage",
            params={"tenant": self.tenant},
            headers={"Authorization": f"Bearer {LIVE_ADMIN_KEY}"},
        )
        rows = r.json()["data"]
        return (
            sum(row["requests"] for row in rows),
            sum(row["prompt_tokens"] + row["completion_tokens"] for row in rows),
            sum(row["cost"] for row in rows),
        )


def budgeted(live: LiveGateway, max_tokens: int) -> Iterator[Budgeted]:
    """A fresh tenant with a daily token budget, laid on the session's gateway for one
    test (its open mode comes back after)."""
    gatekeeper = live.state.gatekeeper
    before = gatekeeper.directory.file_config
    key = generate_key()
    tenant = f"budget-{uuid.uuid4().hex[:8]}"
    gatekeeper.reload(
        TenancyConfig.model_validate(
            {
                "tenants": {
                    tenant: {
                        "keys": [{"id": key.key_id, "hash": key.hash}],
                        "models": ["*"],
                        "budget": {"period": "day", "max_tokens": max_tokens},
                    }
                },
                "pricing": {"models": {"tiny-llama": {"input": 0.5, "output": 1.5}}},
            }
        )
    )
    try:
        yield Budgeted(live, tenant, key.key)
    finally:
        gatekeeper.reload(before)


@pytest.fixture
def small_budget(live_gateway: LiveGateway) -> Iterator[Budgeted]:
    yield from budgeted(live_gateway, 120)


@pytest.fixture
def shared_budget(live_gateway: LiveGateway) -> Iterator[Budgeted]:
    yield from budgeted(live_gateway, 500)


def test_the_sdk_gets_insufficient_quota_once_the_budget_is_spent(
    small_budget: Budgeted,
) -> None:
    client = OpenAI(
        base_url=small_budget.live.base_url + "/v1", api_key=small_budget.key, max_retries=0
    )
    served = 0
    refusal: openai.RateLimitError | None = None
    for _ in range(20):
        try:
            answer = client.chat.completions.create(
                model="tiny-llama",
                messages=MESSAGES,
                max_tokens=8,
                temperature=0,
            )
        except openai.RateLimitError as exc:
            refusal = exc
            break
        assert answer.usage is not None
        served += answer.usage.total_tokens
    assert refusal is not None, "the budget never ran out"
    assert refusal.status_code == 429 and refusal.code == "insufficient_quota"
    assert isinstance(refusal.body, dict) and refusal.body["type"] == "insufficient_quota"
    assert 0 < served <= 120
    requests, tokens, cost = small_budget.usage()
    assert tokens == served  # the refused request never reached the engine
    assert requests >= 1 and cost > 0


def test_32_concurrent_sdk_requests_stay_within_the_budget(shared_budget: Budgeted) -> None:
    async def run() -> list[ChatCompletion | openai.RateLimitError]:
        client = AsyncOpenAI(
            base_url=shared_budget.live.base_url + "/v1", api_key=shared_budget.key, max_retries=0
        )

        async def one() -> ChatCompletion | openai.RateLimitError:
            try:
                return await client.chat.completions.create(
                    model="a1",
                    messages=MESSAGES,
                    max_tokens=16,
                    temperature=0,
                )
            except openai.RateLimitError as exc:
                return exc

        try:
            return await asyncio.gather(*(one() for _ in range(32)))
        finally:
            await client.close()

    answers = asyncio.run(run())
    refused = [a for a in answers if isinstance(a, openai.RateLimitError)]
    served = [a for a in answers if not isinstance(a, openai.RateLimitError)]
    assert refused and served
    assert all(r.code == "insufficient_quota" for r in refused)
    total = sum(a.usage.total_tokens for a in served if a.usage is not None)
    assert total <= 500, f"{total - 500} tokens served past the budget"
    assert shared_budget.usage()[1] == total
