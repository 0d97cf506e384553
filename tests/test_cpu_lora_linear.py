"""``cpu_lora_linear``'s ``add_lora_linear`` on vLLM's real CPU punica wrapper, against
what vLLM's wrapper computes with vLLM's torch ops (as shipped): one shrink and one
expand per slice, per row.

The wrapper is a subclass of vLLM's ``PunicaWrapperCPU`` with the method installed, fed
with ``update_metadata`` and a ``LoRAMapping`` as the model runner feeds it. Slot ``s``
holds the adapter of id ``s + 1``; id 0 is "no adapter" (index ``-1``).
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm.lora.punica_wrapper.punica_cpu")

from vllm.lora.layers.utils import LoRAMapping  # noqa: E402
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU  # noqa: E402

from gateway.engine import cpu_lora_linear  # noqa: E402
from loadtests.bench_lora_ops import vllm_torch_ops  # noqa: E402

pytestmark = pytest.mark.integration  # runs vLLM's punica wrapper (torch)

SLOTS, RANK, IN = 4, 8, 96
SLICES = (64, 16, 16)  # q, k, v of a merged QKV layer
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2}}
REF = vllm_torch_ops()


class GroupedWrapper(PunicaWrapperCPU):  # type: ignore[misc]
    pass


cpu_lora_linear.install(GroupedWrapper)


def wrapper_for(ids: list[int], *, prefill: bool) -> Any:
    w = GroupedWrapper(max_num_batched_tokens=4096, max_batches=256, device="cpu")
    mapping = LoRAMapping(tuple(ids), tuple(ids), is_prefill=prefill)
    w.update_metadata(mapping, [1, 2, 3, 4], SLOTS, 32000)
    return w


def layer(dtype: Any, gen: Any, empty: dict[int, set[int]] | None = None) -> tuple[Any, Any]:
    """Stacked A and B per slice, as vLLM's LoRA layers hold them; ``empty`` maps a slot
    to the slices it has no weights for (zeros, as ``reset_lora`` leaves them)."""
    a_stacked, b_stacked = [], []
    for i, size in enumerate(SLICES):
        a = torch.randn(SLOTS, 1, RANK, IN, generator=gen) / IN**0.5
        b = torch.randn(SLOTS, 1, size, RANK, generator=gen) / RANK**0.5
        for slot, slices in (empty or {}).items():
            if i in slices:
                a[slot], b[slot] = 0, 0
        a_stacked.append(a.to(dtype))
        b_stacked.append(b.to(dtype))
    return tuple(a_stacked), tuple(b_stacked)


def vllm_add_lora_linear(y: Any, x: Any, a: Any, b: Any, scale: float, ids: list[int]) -> None:
    """vLLM's CPU wrapper, per slice, with its shipped torch ops (decode form: the same
    per-row arithmetic as its prefill form). Rows without an adapter are left alone by
    the caller: vLLM's ops would wrap their ``-1`` to the last slot."""
    idx = torch.tensor(ids) - 1
    offset = 0
    for a_i, b_i, size in zip(a, b, SLICES, strict=True):
        buffer = torch.zeros(x.shape[0], RANK)
        REF.bgmv_shrink(x, a_i, buffer, idx.clamp(min=0), scale)
        REF.bgmv_expand_slice(buffer, b_i, y, idx.clamp(min=0), offset, size, True)
        offset += size


def row_ids(kind: str, n: int, gen: Any) -> list[int]:
    if kind == "runs":  # prefill: each request's rows together
        cuts = sorted(torch.randint(1, n, (3,), generator=gen).tolist())
        lengths = torch.diff(torch.tensor([0, *cuts, n]))
        return torch.repeat_interleave(torch.tensor([3, 0, 1, 3]), lengths).tolist()
    return torch.randint(0, SLOTS + 1, (n,), generator=gen).tolist()  # decode, with 0s


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("kind", "n"), [("runs", 300), ("interleaved", 16), ("interleaved", 200)])
def test_add_lora_linear_matches_vllm_per_slice_ops(dtype: Any, kind: str, n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    ids = row_ids(kind, n, gen)
    # Slot 1 has no k and v (an adapter on q only), slot 3 nothing in this layer.
    a, b = layer(dtype, gen, empty={1: {1, 2}, 3: {0, 1, 2}})
    x = torch.randn(n, IN, generator=gen).to(dtype)
    before = torch.randn(n, sum(SLICES) + 8, generator=gen).to(dtype)  # + columns not ours
    got, want = before.clone(), before.clone()
    w = wrapper_for(ids, prefill=kind == "runs")
    w.add_lora_linear(got[:, : sum(SLICES)], x, a, b, 0.5, SLICES)
    vllm_add_lora_linear(want, x, a, b, 0.5, ids)
    has = torch.tensor(ids) > 0
    torch.testing.assert_close(got[has], want[has], **TOL[dtype])
    assert torch.equal(got[~has], before[~has]), "rows without an adapter must be untouched"
    assert torch.equal(got[:, sum(SLICES) :], before[:, sum(SLICES) :])


def test_a_layer_without_weights_for_the_batch_runs_no_gemm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The MLP layers of a q/k/v/o adapter: zeros in the batch's slots, so no GEMM at all,
    even though another slot holds weights for the layer."""
    gen = torch.Generator().manual_seed(2)
    a, b = layer(torch.float32, gen, empty={0: {0, 1, 2}, 1: {0, 1, 2}})
    x = torch.randn(16, IN, generator=gen)
    y = torch.randn(16, sum(SLICES), generator=gen)
    before = y.clone()
    calls: list[int] = []
    real_mm = torch.mm

    def counting_mm(*args: Any) -> Any:
        calls.append(1)
        return real_mm(*args)

    monkeypatch.setattr(torch, "mm", counting_mm)
    wrapper_for([1, 2, 0, 1] * 4, prefill=False).add_lora_linear(y, x, a, b, 1.0, SLICES)
    assert calls == [] and torch.equal(y, before)
    wrapper_for([3, 0] * 8, prefill=False).add_lora_linear(y, x, a, b, 1.0, SLICES)
    assert len(calls) == 2, "one shrink and one expand GEMM for slot 2's rows"
    assert not torch.equal(y, before)


def test_a_slot_refilled_in_place_is_seen() -> None:
    """vLLM reuses a slot for another adapter by zeroing it and copying into it
    (``reset_lora`` + ``set_lora``): the cached weights must follow."""
    gen = torch.Generator().manual_seed(4)
    a, b = layer(torch.float32, gen)
    x = torch.randn(8, IN, generator=gen)
    w = wrapper_for([1] * 8, prefill=False)
    w.add_lora_linear(torch.zeros(8, sum(SLICES)), x, a, b, 1.0, SLICES)  # cache filled
    for a_i, b_i in zip(a, b, strict=True):  # the new adapter has only q
        a_i[0], b_i[0] = 0, 0
    new_a = torch.randn(RANK, IN, generator=gen)
    new_b = torch.randn(SLICES[0], RANK, generator=gen)
    a[0][0, 0].copy_(new_a)
    b[0][0, 0].copy_(new_b)
    got = torch.zeros(8, sum(SLICES))
    w.add_lora_linear(got, x, a, b, 1.0, SLICES)
    want = torch.zeros(8, sum(SLICES))
    want[:, : SLICES[0]] = (x @ new_a.t()) @ new_b.t()
    torch.testing.assert_close(got, want, **TOL[torch.float32])


def test_a_new_mapping_gets_a_new_row_plan() -> None:
    """The row plan lives until the next ``update_metadata``, which must replace it."""
    gen = torch.Generator().manual_seed(6)
    a, b = layer(torch.float32, gen)
    x = torch.randn(12, IN, generator=gen)
    w = wrapper_for([1, 2, 3] * 4, prefill=False)
    w.add_lora_linear(torch.zeros(12, sum(SLICES)), x, a, b, 1.0, SLICES)
    ids = [3, 0, 1, 2] * 3
    w.update_metadata(LoRAMapping(tuple(ids), tuple(ids)), [1, 2, 3, 4], SLOTS, 32000)
    got, want = torch.zeros(12, sum(SLICES)), torch.zeros(12, sum(SLICES))
    w.add_lora_linear(got, x, a, b, 1.0, SLICES)
    vllm_add_lora_linear(want, x, a, b, 1.0, ids)
    has = torch.tensor(ids) > 0
    torch.testing.assert_close(got[has], want[has], **TOL[torch.float32])
    assert torch.equal(got[~has], torch.zeros_like(got[~has]))


def test_a_row_gets_the_same_bits_sliced_or_gathered() -> None:
    """Solo, a request's rows are one slice; in a mixed decode batch they are gathered:
    both must round alike, or a greedy output changes with its batch."""
    gen = torch.Generator().manual_seed(9)
    a, b = layer(torch.bfloat16, gen)
    n = 70
    x = torch.randn(n, IN, generator=gen).to(torch.bfloat16)
    before = torch.randn(n, sum(SLICES), generator=gen).to(torch.bfloat16)
    mixed = [1, 2] * (n // 2)
    in_batch = before.clone()
    wrapper_for(mixed, prefill=False).add_lora_linear(in_batch, x, a, b, 1.0, SLICES)
    mine = torch.tensor(mixed) == 1
    solo = before[mine].clone()
    ones = [1] * int(mine.sum())
    wrapper_for(ones, prefill=False).add_lora_linear(solo, x[mine], a, b, 1.0, SLICES)
    assert torch.equal(in_batch[mine], solo)
