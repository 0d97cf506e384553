"""Several engine streams as one, and final choices from a stream's deltas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from gateway.engine.interface import (
    ChoiceOutput,
    GenerationOutput,
    GenerationRequest,
    TokenLogprob,
)
from gateway.errors import EngineFailureError

Generate = Callable[[GenerationRequest], AsyncIterator[GenerationOutput]]


async def merged(
    generate: Generate, generations: list[GenerationRequest]
) -> AsyncGenerator[tuple[int, GenerationOutput], None]:
    """Interleave the streams of ``generations`` as outputs arrive, tagged with their
    index. Closing this generator cancels every engine stream (and so the requests)."""
    if len(generations) == 1:
        async for out in generate(generations[0]):
            yield 0, out
        return
    queue: asyncio.Queue[tuple[int, GenerationOutput | BaseException | None]] = asyncio.Queue()

    async def pump(p: int, generation: GenerationRequest) -> None:
        try:
            async for out in generate(generation):
                await queue.put((p, out))
            await queue.put((p, None))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the consumer)
            await queue.put((p, exc))

    tasks = [asyncio.create_task(pump(p, g)) for p, g in enumerate(generations)]
    remaining = len(tasks)
    try:
        while remaining:
            p, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield p, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ChoiceAccumulator:
    """Joins the deltas of ``prompts`` x ``n`` choices into final ``ChoiceOutput``s."""

    def __init__(self, prompts: int, n: int) -> None:
        self.n = n
        self._texts = [[""] * n for _ in range(prompts)]
        self._ids: list[list[list[int]]] = [[[] for _ in range(n)] for _ in range(prompts)]
        self._lps: list[list[list[TokenLogprob]]] = [[[] for _ in range(n)] for _ in range(prompts)]
        self._reasons: list[list[str | None]] = [[None] * n for _ in range(prompts)]

    def add(self, p: int, out: GenerationOutput) -> None:
        for c in out.choices:
            if not 0 <= c.index < self.n:  # engines check this; a wrong one must not 500
                raise EngineFailureError("The inference engine returned an invalid answer.")
            self._texts[p][c.index] += c.text
            self._ids[p][c.index].extend(c.token_ids)
            self._lps[p][c.index].extend(c.logprobs or ())
            self._reasons[p][c.index] = c.finish_reason or self._reasons[p][c.index]

    def choices(self, p: int) -> list[ChoiceOutput]:
        return [
            ChoiceOutput(
                index=i,
                text=self._texts[p][i],
                token_ids=tuple(self._ids[p][i]),
                logprobs=tuple(self._lps[p][i]),
                finish_reason=self._reasons[p][i],
            )
            for i in range(self.n)
        ]
