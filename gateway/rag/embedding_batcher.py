"""``EmbeddingBatcher``: concurrent requests' inputs combined into one embedder call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

FILL_GAPS = 10
"""Most waits of ``max_wait`` before one call (while inputs keep arriving)."""

EmbedFunction = Callable[[list[str]], np.ndarray]
"""Texts -> float32 array of shape ``(len(texts), dimension)`` (blocking)."""


@dataclass(eq=False)
class _Job:
    """One caller's texts; its slices go out in one or more batches."""

    texts: list[str]
    future: asyncio.Future[np.ndarray]
    sent: int = 0  # texts handed to a batch so far
    parts: dict[int, np.ndarray] = field(default_factory=dict)  # start -> vectors
    received: int = 0

    @property
    def waiting(self) -> int:
        return len(self.texts) - self.sent


@dataclass(frozen=True)
class BatchFigures:
    """What one embedder call carried (for metrics and tests)."""

    inputs: int
    requests: int
    seconds: float


class EmbeddingBatcher:
    """Runs ``embed`` on one worker thread, one call at a time, with the inputs of every
    request waiting at that moment (at most ``max_inputs`` per call).

    Before each call the batcher waits for more requests while they keep arriving (gaps
    of at most ``max_wait`` seconds, ``FILL_GAPS`` of them at most; not at all once
    ``max_inputs`` are waiting); while a call runs, arrivals queue and go into the next
    call. A request larger than ``max_inputs`` is cut into slices, and each call takes
    slices of the waiting requests in turn, so a small request is never stuck behind a
    large one. A request whose caller is cancelled loses its slices not yet sent.

    Concurrency rule: ``embed`` and ``close`` are called on the event loop (one loop);
    the embedder runs only on the batcher's own thread, never on the loop.
    """

    def __init__(
        self,
        embed: EmbedFunction,
        *,
        max_inputs: int,
        max_wait: float,
        on_batch: Callable[[BatchFigures], None] | None = None,
    ) -> None:
        self._embed = embed
        self._max_inputs = max_inputs
        self._max_wait = max_wait
        self._on_batch = on_batch
        self._jobs: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()  # set when the waiting inputs fill a call
        self._worker: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._closed = False

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``, in order (the embedder's exceptions are raised here)."""
        if self._closed:
            raise RuntimeError("the embedding batcher is closed")
        loop = asyncio.get_running_loop()
        job = _Job(list(texts), loop.create_future())
        self._jobs.append(job)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="embedding-batcher")
        self._wakeup.set()
        if self._waiting_inputs() >= self._max_inputs:
            self._full.set()
        return await job.future  # cancelling the caller cancels the future: slices dropped

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for job in self._jobs:
            if not job.future.done():
                job.future.cancel()
        self._jobs.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting_inputs():
                await self._fill()
                batch = self._take()
                if not batch:
                    continue
                texts = [t for job, start, stop in batch for t in job.texts[start:stop]]
                started = loop.time()
                try:
                    vectors = await loop.run_in_executor(self._pool, self._embed, texts)
                    if vectors.shape[0] != len(texts):
                        raise RuntimeError(
                            f"the embedder returned {vectors.shape[0]} vectors for {len(texts)}"
                        )
                except Exception as exc:
                    logger.exception("embedding batch of %d inputs failed", len(texts))
                    self._fail({job for job, _, _ in batch}, exc)
                    continue
                if self._on_batch is not None:
                    requests = len({id(job) for job, _, _ in batch})
                    self._on_batch(BatchFigures(len(texts), requests, loop.time() - started))
                self._deliver(batch, vectors)

    async def _fill(self) -> None:
        """Wait for the next call to fill while requests keep coming: until a gap of
        ``max_wait`` with no new input, ``FILL_GAPS`` such gaps at most (the callers the
        last call answered come back one after another). A full call goes at once."""
        if self._max_wait <= 0:
            return
        seen = -1
        for _ in range(FILL_GAPS):
            waiting = self._waiting_inputs()
            if waiting >= self._max_inputs or waiting == seen:
                return
            seen = waiting
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._max_wait)

    def _waiting_inputs(self) -> int:
        return sum(job.waiting for job in self._jobs if not job.future.done())

    def _take(self) -> list[tuple[_Job, int, int]]:
        """Slices for the next call: the waiting requests in turn, ``max_inputs`` in all."""
        room = self._max_inputs
        batch: list[tuple[_Job, int, int]] = []
        while room > 0:
            live = [job for job in self._jobs if job.waiting and not job.future.done()]
            if not live:
                break
            share = max(1, room // len(live))
            for job in live:
                count = min(share, job.waiting, room)
                if count == 0:
                    break
                batch.append((job, job.sent, job.sent + count))
                job.sent += count
                room -= count
        # Requests with nothing left to send leave the queue (their results come back
        # with the batches that carry them).
        self._jobs = deque(job for job in self._jobs if job.waiting and not job.future.done())
        return batch

    def _deliver(self, batch: list[tuple[_Job, int, int]], vectors: np.ndarray) -> None:
        offset = 0
        for job, start, stop in batch:
            count = stop - start
            if not job.future.done():
                job.parts[start] = vectors[offset : offset + count]
                job.received += count
                if job.received == len(job.texts):
                    parts = [job.parts[s] for s in sorted(job.parts)]
                    job.future.set_result(np.concatenate(parts, axis=0))
            offset += count

    def _fail(self, jobs: set[_Job], exc: Exception) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)
        self._jobs = deque(job for job in self._jobs if job not in jobs)
