"""A remembered refusal is answered to every request for its name until it expires: each
request must get its own error object, or every raise would add that request's frames
(and the locals they hold) to one shared traceback, kept alive for the whole TTL."""

from __future__ import annotations

import contextlib
import gc
import weakref
from types import TracebackType

from adapters.errors import AdapterError, UnsafeWeightsFormatError
from gateway.adapter_runtime.miss_memory import MissMemory


def depth(tb: TracebackType | None) -> int:
    n = 0
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


def answer(memory: MissMemory) -> AdapterError:
    miss = memory.get("acme", "bad")
    assert miss is not None and miss.error is not None
    try:
        raise miss.error
    except AdapterError as exc:
        return exc


def test_each_request_gets_a_fresh_copy_of_a_remembered_refusal() -> None:
    memory = MissMemory(ttl_seconds=30, per_tenant=10, max_tenants=10, clock=lambda: 0.0)
    refusal = UnsafeWeightsFormatError("pickle weights", code="unsafe_weights_format")
    memory.remember("acme", "bad", refusal)
    answers = [answer(memory) for _ in range(200)]
    assert {depth(a.__traceback__) for a in answers} == {1}
    assert len({id(a) for a in answers}) == len(answers)
    for a in answers:
        assert type(a) is UnsafeWeightsFormatError
        assert a.to_openai() == refusal.to_openai()
        assert a.status_code == refusal.status_code


class Payload:
    """Stands for what a request's frames hold (its body, its messages)."""


def test_the_memory_keeps_no_frames_of_the_requests_that_raised_the_refusal() -> None:
    memory = MissMemory(ttl_seconds=30, per_tenant=10, max_tenants=10, clock=lambda: 0.0)
    refusal: AdapterError | None = UnsafeWeightsFormatError("pickle weights")
    alive: list[weakref.ref[Payload]] = []

    def waiter(error: AdapterError) -> None:  # each request of one single-flight fetch
        payload = Payload()
        alive.append(weakref.ref(payload))
        raise error

    assert refusal is not None
    memory.remember("acme", "bad", refusal)  # then every waiter raises the same object
    for _ in range(5):
        with contextlib.suppress(AdapterError):
            waiter(refusal)
    refusal = None
    gc.collect()
    assert [ref() for ref in alive] == [None] * 5
    assert memory.get("acme", "bad") is not None
