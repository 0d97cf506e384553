"""A remembered refusal is answered to every request for its name until it expires: each
request must get its own error object, or every raise would add that request's frames
(and the locals they hold) to one shared traceback, kept alive for the whole TTL."""

from __future__ import annotations

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
