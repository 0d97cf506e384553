"""The fleet benchmark's workload (``bench_fleet``): one seeded request sequence, Zipf
(s = 1.0) over an adapter fleet, and an async client that replays it against any
OpenAI-compatible server at a fixed concurrency, recording time to first token per
request.

Every system gets the same sequence: the same adapter and the same token-id prompt at
each position, streamed ``/v1/completions`` with ``ignore_eos`` and a fixed
``max_tokens`` (a fixed output length whatever the weights say). Only the ``model``
changes when the sequence runs against the base model alone (every request names it).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

PROMPT_IDS = (1000, 40000)
"""Token ids prompts are drawn from: ordinary BPE pieces, no special tokens."""


@dataclass(frozen=True)
class Workload:
    """Position ``i`` sends ``models[i]`` the prompt ``prompts[i]``."""

    models: list[str]
    prompts: list[list[int]]
    output_len: int

    def on_base(self, base: str) -> Workload:
        """The same prompts, every request to ``base``."""
        return Workload([base] * len(self.models), self.prompts, self.output_len)

    def first_requests(self) -> set[int]:
        """Positions that are the first request of their adapter in the sequence."""
        seen: set[str] = set()
        first: set[int] = set()
        for index, model in enumerate(self.models):
            if model not in seen:
                seen.add(model)
                first.add(index)
        return first


def zipf_workload(
    names: Sequence[str],
    requests: int,
    *,
    seed: int,
    input_len: int,
    output_len: int,
    s: float = 1.0,
) -> Workload:
    """``requests`` draws over ``names`` with P(k-th name) proportional to 1 / k**s, and
    a prompt of ``input_len`` random token ids for each (both from ``seed``)."""
    draw = random.Random(seed)
    weights = [1.0 / (k**s) for k in range(1, len(names) + 1)]
    models = draw.choices(list(names), weights=weights, k=requests)
    prompts = [[draw.randint(*PROMPT_IDS) for _ in range(input_len)] for _ in range(requests)]
    return Workload(models, prompts, output_len)


@dataclass(frozen=True)
class Outcome:
    """One request: time to first token and tokens received (None / 0 on error)."""

    model: str
    ttft: float | None
    tokens: int
    error: str | None


@dataclass(frozen=True)
class Replay:
    outcomes: list[Outcome]
    seconds: float

    @property
    def errors(self) -> int:
        return sum(1 for o in self.outcomes if o.error is not None)

    @property
    def output_tps(self) -> float:
        return sum(o.tokens for o in self.outcomes) / self.seconds

    def ttfts(self, positions: set[int] | None = None) -> list[float]:
        return [
            o.ttft
            for i, o in enumerate(self.outcomes)
            if o.ttft is not None and (positions is None or i in positions)
        ]

    def first_error(self) -> str | None:
        return next((o.error for o in self.outcomes if o.error is not None), None)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (linear between order statistics); None when empty."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return values[0] if q <= 0 else cuts[min(int(q), 99) - 1]


async def _one(client: httpx.AsyncClient, model: str, prompt: list[int], out_len: int) -> Outcome:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": out_len,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    usage: int | None = None
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                text = (await response.aread())[:200].decode(errors="replace")
                return Outcome(model, None, 0, f"{response.status_code} {text}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return Outcome(model, None, 0, str(chunk["error"])[:200])
                if chunk.get("usage"):
                    usage = int(chunk["usage"]["completion_tokens"])
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - started
    except httpx.HTTPError as exc:
        return Outcome(model, None, 0, f"{type(exc).__name__}: {exc}")
    if first is None:
        return Outcome(model, None, 0, "no token in the stream")
    return Outcome(model, first, usage if usage is not None else chunks, None)


async def _replay(url: str, key: str | None, workload: Workload, concurrency: int) -> Replay:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    outcomes: list[Outcome | None] = [None] * len(workload.models)
    queue = iter(range(len(workload.models)))
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=900, limits=limits, trust_env=False
    ) as client:

        async def worker() -> None:
            for index in queue:  # one shared iterator: positions go out in order
                outcomes[index] = await _one(
                    client, workload.models[index], workload.prompts[index], workload.output_len
                )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Replay([o for o in outcomes if o is not None], seconds)


def replay(url: str, key: str | None, workload: Workload, concurrency: int) -> Replay:
    """Send ``workload`` in order, ``concurrency`` requests in flight; wall time from the
    first request out to the last answer in."""
    return asyncio.run(_replay(url, key, workload, concurrency))
