"""``EmbeddingBatcher`` alone: combining, slicing, fairness, cancellation and failures."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from gateway.rag.embedding_batcher import BatchFigures, EmbeddingBatcher


class Recorder:
    """An embedder function: vector i of a text is [len(text), hash], recorded per call;
    ``gate`` (when set) holds each call until the test releases it."""

    def __init__(self, gate: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not gate:
            self.release.set()
        self.fail: Exception | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.entered.set()
        assert self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        return vectors(texts)


def vectors(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), sum(map(ord, t))] for t in texts], dtype=np.float32)


async def test_a_large_request_is_sliced_and_reassembled_in_order() -> None:
    embed = Recorder()
    figures: list[BatchFigures] = []
    batcher = EmbeddingBatcher(embed, max_inputs=4, max_wait=0, on_batch=figures.append)
    texts = [f"text {i}" * (i + 1) for i in range(10)]
    out = await batcher.embed(texts)
    assert np.array_equal(out, vectors(texts))
    assert [len(c) for c in embed.calls] == [4, 4, 2]
    assert [f.inputs for f in figures] == [4, 4, 2]
    await batcher.close()


async def test_requests_arriving_during_a_call_share_the_next_one() -> None:
    embed = Recorder(gate=True)
    batcher = EmbeddingBatcher(embed, max_inputs=64, max_wait=0)
    first = asyncio.create_task(batcher.embed(["a"]))
    await asyncio.to_thread(embed.entered.wait, 5)
    later = [asyncio.create_task(batcher.embed([f"b{i}", f"c{i}"])) for i in range(3)]
    await asyncio.sleep(0.05)
    embed.release.set()
    results = await asyncio.gather(first, *later)
    assert embed.calls == [["a"], ["b0", "c0", "b1", "c1", "b2", "c2"]]
    for i, result in enumerate(results[1:]):
        assert np.array_equal(result, vectors([f"b{i}", f"c{i}"]))
    await batcher.close()


async def test_a_small_request_is_not_stuck_behind_a_large_one() -> None:
    embed = Recorder(gate=True)
    batcher = EmbeddingBatcher(embed, max_inputs=4, max_wait=0)
    blocker = asyncio.create_task(batcher.embed(["x"]))
    await asyncio.to_thread(embed.entered.wait, 5)
    large = asyncio.create_task(batcher.embed([f"L{i}" for i in range(12)]))
    await asyncio.sleep(0)
    small = asyncio.create_task(batcher.embed(["s"]))
    await asyncio.sleep(0.05)
    embed.release.set()
    await asyncio.gather(blocker, large, small)
    # The small request goes out in the first call after the blocker, beside a slice of
    # the large one, not after all three of its slices.
    assert "s" in embed.calls[1]
    assert sorted(t for call in embed.calls for t in call if t.startswith("L")) == sorted(
        f"L{i}" for i in range(12)
    )
    await batcher.close()


async def test_a_cancelled_request_loses_its_unsent_slices() -> None:
    embed = Recorder(gate=True)
    batcher = EmbeddingBatcher(embed, max_inputs=2, max_wait=0)
    blocker = asyncio.create_task(batcher.embed(["x"]))
    await asyncio.to_thread(embed.entered.wait, 5)
    doomed = asyncio.create_task(batcher.embed([f"d{i}" for i in range(6)]))
    await asyncio.sleep(0.01)
    doomed.cancel()
    embed.release.set()
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await batcher.embed(["after"]) is not None
    assert [t for call in embed.calls for t in call if t.startswith("d")] == []
    await batcher.close()


async def test_an_embedder_failure_reaches_every_request_of_its_call_only() -> None:
    embed = Recorder(gate=True)
    batcher = EmbeddingBatcher(embed, max_inputs=8, max_wait=0)
    blocker = asyncio.create_task(batcher.embed(["x"]))
    await asyncio.to_thread(embed.entered.wait, 5)
    both = [asyncio.create_task(batcher.embed([t])) for t in ("p", "q")]
    await asyncio.sleep(0.01)
    embed.fail = RuntimeError("model fell over")
    embed.release.set()
    with pytest.raises(RuntimeError):
        await blocker
    for task in both:
        with pytest.raises(RuntimeError, match="fell over"):
            await task
    embed.fail = None
    assert np.array_equal(await batcher.embed(["ok"]), vectors(["ok"]))  # still serving
    await batcher.close()


async def test_the_idle_wait_gathers_companions_and_close_stops_it() -> None:
    embed = Recorder()
    batcher = EmbeddingBatcher(embed, max_inputs=8, max_wait=0.1)
    a = asyncio.create_task(batcher.embed(["a"]))
    await asyncio.sleep(0.02)
    b = asyncio.create_task(batcher.embed(["b"]))
    await asyncio.gather(a, b)
    assert embed.calls == [["a", "b"]]
    await batcher.close()
    with pytest.raises(RuntimeError):
        await batcher.embed(["late"])


async def test_a_full_call_does_not_wait_and_later_calls_wait_to_fill() -> None:
    embed = Recorder(gate=True)
    batcher = EmbeddingBatcher(embed, max_inputs=2, max_wait=30)
    started = asyncio.get_running_loop().time()
    first = asyncio.create_task(batcher.embed(["a", "b"]))  # fills a call: goes at once
    await asyncio.to_thread(embed.entered.wait, 5)
    assert asyncio.get_running_loop().time() - started < 5
    waiting = asyncio.create_task(batcher.embed(["c"]))
    embed.release.set()
    await first
    await asyncio.sleep(0.1)
    assert embed.calls == [["a", "b"]]  # "c" waits for company (up to 30 s)
    await batcher.embed(["d"])  # which fills the call
    await waiting
    assert embed.calls == [["a", "b"], ["c", "d"]]
    await batcher.close()


async def test_the_wait_goes_on_while_requests_keep_coming() -> None:
    embed = Recorder()
    batcher = EmbeddingBatcher(embed, max_inputs=64, max_wait=0.2)
    tasks = []
    for i in range(5):  # one every 0.1 s: each within a gap of the last, 0.5 s in all
        tasks.append(asyncio.create_task(batcher.embed([f"t{i}"])))
        await asyncio.sleep(0.1)
    await asyncio.gather(*tasks)
    assert embed.calls == [[f"t{i}" for i in range(5)]]
    await batcher.close()
