"""``PunicaWrapperCPU.add_lora_linear`` for the grouped ops: no work for modules the
batch's adapters leave empty, and one shrink GEMM and one expand GEMM per adapter for
all the slices of a layer (q/k/v, gate/up).

vLLM wraps every LoRA-capable linear layer of the model, whatever the loaded adapters
target, and its CPU wrapper runs a shrink and an expand per slice of every one of them:
for adapters on q, k, v and o, the MLP's gate/up and down layers (zero weights in every
slot) cost 6 of the 14 op calls per layer, and q/k/v 6 more for what one GEMM pair does.
In decode those calls are overhead, not FLOPs (30-50 us each, docs/benchmarks.md).

``add_lora_linear`` here:

- returns at once when no row of the batch has an adapter with weights in this layer
  (which slots hold weights is read from the stacked weights and cached per layer,
  invalidated by the weights' version counters, so a slot refilled by vLLM is seen);
- for each adapter present, shrinks its rows with the A matrices of all its slices in
  one float32 GEMM (as vLLM's buffer is float32), then expands with one GEMM against a
  block-diagonal B (the slices side by side, zeros elsewhere) in the output's dtype,
  and adds the result into the output: the zeros add exact zeros, so each column gets
  the same value as vLLM's per-slice expand;
- in decode (up to ``DENSE_MAX_ROWS`` rows) with two adapters or more, runs all of them
  as one GEMM pair: every adapter's A side by side, a 0/1 mask keeping each row's own
  adapter's ranks (others become exact zeros), every B stacked. The extra FLOPs are
  a few rows times a few ranks; the saved calls are ~50 us each per adapter and layer.

Self-contained (torch, and the row plan of ``cpu_lora_ops``): vLLM's CPU wrapper could
take it as its ``add_lora_linear``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from gateway.engine.cpu_lora_ops import RowPlan, plan_rows, runs_of_indices


@dataclass(frozen=True)
class SlotMatrices:
    """One slot's weights for one layer, ready for the two GEMMs."""

    a_t: torch.Tensor  # [in_features, sum of ranks of the slices with weights], float32
    b_t: torch.Tensor  # [sum of ranks, sum(output_slices)], block-diagonal, output dtype


@dataclass(frozen=True)
class DenseBatch:
    """Several adapters' rows in one GEMM pair: every adapter's A side by side, every B
    stacked, and a 0/1 mask that keeps, for each row, only its own adapter's ranks."""

    rows: torch.Tensor  # the rows with an adapter that has weights here
    a_t: torch.Tensor  # [in_features, sum of the adapters' ranks], float32
    b_t: torch.Tensor  # [sum of ranks, sum(output_slices)], output dtype
    mask: torch.Tensor  # [len(rows), sum of ranks], float32


@dataclass
class LayerWeights:
    """Per layer: the weights' versions when read, which slots hold weights, each such
    slot's fused matrices (built on first use), and the last plan's dense batch."""

    owner: weakref.ref[torch.Tensor]
    versions: tuple[int, ...]
    filled: frozenset[int]
    fused: dict[tuple[int, torch.dtype], SlotMatrices]
    dense: tuple[RowPlan, torch.dtype, DenseBatch] | None = None


# Decode batches (a row per request) up to this many rows, with two adapters or more,
# run as one dense GEMM pair instead of a pair per adapter.
DENSE_MAX_ROWS = 64


# Keyed by ``id`` of the layer's first A tensor (checked against a weak reference).
_LAYERS: dict[int, LayerWeights] = {}
MAX_CACHED_LAYERS = 1024


def cached_layers() -> int:
    """How many layers' weights this process keeps (zero until the method has run)."""
    return len(_LAYERS)


def clear_layer_cache() -> None:
    """Forget every layer's weights (they are rebuilt on the next forward pass)."""
    _LAYERS.clear()


def _versions(tensors: tuple[torch.Tensor, ...]) -> tuple[int, ...] | None:
    """The tensors' version counters; ``None`` for inference tensors (they have none)."""
    if any(t.is_inference() for t in tensors):
        return None
    return tuple(t._version for t in tensors)  # noqa: SLF001 (torch has no public counter)


def filled_slots(
    a_stacked: tuple[torch.Tensor, ...], b_stacked: tuple[torch.Tensor, ...]
) -> set[int]:
    """Slots whose A and B are both non-zero in at least one slice."""
    filled: set[int] = set()
    for a, b in zip(a_stacked, b_stacked, strict=True):
        has = a.flatten(1).ne(0).any(1) & b.flatten(1).ne(0).any(1)
        filled.update(int(s) for s in has.nonzero().flatten().tolist())
    return filled


def layer_weights(
    a_stacked: tuple[torch.Tensor, ...], b_stacked: tuple[torch.Tensor, ...]
) -> LayerWeights:
    """The cached view of a layer's stacked weights, re-read when any of them changed."""
    tensors = (*a_stacked, *b_stacked)
    key = id(a_stacked[0])
    versions = _versions(tensors)
    entry = _LAYERS.get(key)
    if (
        entry is not None
        and versions is not None
        and entry.versions == versions
        and entry.owner() is a_stacked[0]
    ):
        return entry
    entry = LayerWeights(
        owner=weakref.ref(a_stacked[0]),
        versions=versions if versions is not None else (),
        filled=frozenset(filled_slots(a_stacked, b_stacked)),
        fused={},
    )
    if versions is not None:
        if len(_LAYERS) >= MAX_CACHED_LAYERS:  # engines come and go (tests): drop the dead
            for k in [k for k, e in _LAYERS.items() if e.owner() is None]:
                del _LAYERS[k]
        _LAYERS[key] = entry
    return entry


def slot_matrices(
    entry: LayerWeights,
    slot: int,
    a_stacked: tuple[torch.Tensor, ...],
    b_stacked: tuple[torch.Tensor, ...],
    output_slices: tuple[int, ...],
    dtype: torch.dtype,
) -> SlotMatrices:
    """A of every slice stacked (float32, transposed), B block-diagonal (``dtype``)."""
    cached = entry.fused.get((slot, dtype))
    if cached is not None:
        return cached
    a_parts, spans = [], []
    rank_at, col_at = 0, 0
    for a, b, size in zip(a_stacked, b_stacked, output_slices, strict=True):
        a_s, b_s = a[slot].reshape(a.shape[-2], a.shape[-1]), b[slot].reshape(b.shape[-2], -1)
        if bool(a_s.ne(0).any()) and bool(b_s.ne(0).any()):
            a_parts.append(a_s)
            spans.append((rank_at, col_at, b_s, size))
            rank_at += a_s.shape[0]
        col_at += size
    a_t = torch.cat(a_parts).to(torch.float32).t().contiguous()
    b_t = torch.zeros(rank_at, col_at, dtype=dtype, device=a_t.device)
    for r0, c0, b_s, size in spans:
        cols = min(size, b_s.shape[0])
        b_t[r0 : r0 + b_s.shape[1], c0 : c0 + cols] = b_s[:cols].to(dtype).t()
    matrices = SlotMatrices(a_t=a_t, b_t=b_t)
    entry.fused[(slot, dtype)] = matrices
    return matrices


def dense_batch(
    entry: LayerWeights,
    plan: RowPlan,
    a_stacked: tuple[torch.Tensor, ...],
    b_stacked: tuple[torch.Tensor, ...],
    output_slices: tuple[int, ...],
    dtype: torch.dtype,
) -> DenseBatch:
    if entry.dense is not None and entry.dense[0] is plan and entry.dense[1] == dtype:
        return entry.dense[2]
    a_parts, b_parts, row_parts, spans = [], [], [], []
    rank_at = 0
    for lora, wheres in plan.groups:
        if lora < 0 or lora not in entry.filled:
            continue
        m = slot_matrices(entry, lora, a_stacked, b_stacked, output_slices, dtype)
        a_parts.append(m.a_t)
        b_parts.append(m.b_t)
        rows = torch.cat(
            [torch.arange(w.start, w.stop) if isinstance(w, slice) else w for w in wheres]
        )
        row_parts.append(rows)
        spans.append((len(rows), rank_at, rank_at + m.a_t.shape[1]))
        rank_at += m.a_t.shape[1]
    mask = torch.zeros(sum(n for n, _, _ in spans), rank_at)
    at = 0
    for n, r0, r1 in spans:
        mask[at : at + n, r0:r1] = 1
        at += n
    batch = DenseBatch(
        rows=torch.cat(row_parts), a_t=torch.cat(a_parts, 1), b_t=torch.cat(b_parts), mask=mask
    )
    entry.dense = (plan, dtype, batch)
    return batch


def apply_fused(
    y: torch.Tensor,
    x: torch.Tensor,
    a_stacked: tuple[torch.Tensor, ...],
    b_stacked: tuple[torch.Tensor, ...],
    scale: float,
    output_slices: tuple[int, ...],
    plan: RowPlan,
) -> None:
    """``y[rows, slices] += (x[rows] @ A[slot].T * scale) @ B[slot].T`` per adapter."""
    entry = layer_weights(a_stacked, b_stacked)
    width = sum(output_slices)
    target = y[:, :width]
    present = [lora for lora, _ in plan.groups if lora >= 0 and lora in entry.filled]
    if len(present) > 1 and y.shape[0] <= DENSE_MAX_ROWS:
        d = dense_batch(entry, plan, a_stacked, b_stacked, output_slices, y.dtype)
        buffer = torch.mm(x.index_select(0, d.rows).to(torch.float32), d.a_t)
        if scale != 1.0:
            buffer.mul_(scale)
        buffer.mul_(d.mask)
        target.index_add_(0, d.rows, torch.mm(buffer.to(y.dtype), d.b_t))
        return
    for lora, wheres in plan.groups:
        if lora < 0 or lora not in entry.filled:
            continue
        m = slot_matrices(entry, lora, a_stacked, b_stacked, output_slices, y.dtype)
        for where in wheres:
            # vLLM's roundings: shrink in float32 (its buffer), scaled; the buffer cast to
            # the output dtype; the expand's product in that dtype, then added.
            rows = x[where] if isinstance(where, slice) else x.index_select(0, where)
            buffer = torch.mm(rows.to(torch.float32), m.a_t)
            if scale != 1.0:
                buffer.mul_(scale)
            delta = torch.mm(buffer.to(y.dtype), m.b_t)
            if isinstance(where, slice):
                target[where] += delta
            else:
                target.index_add_(0, where, delta)


class StepRows:
    """The row plan of the wrapper's current mapping, built on first use after each
    ``update_metadata`` (the only writer of the wrapper's per-token indices) and reused
    by every layer of the forward passes until the mapping changes. vLLM runs the model
    in one thread per process."""

    def __init__(self) -> None:
        self._plans: dict[int, RowPlan] = {}

    def invalidate(self) -> None:
        self._plans = {}

    def plan(self, token_lora_indices: torch.Tensor, n_rows: int) -> RowPlan:
        plan = self._plans.get(n_rows)
        if plan is None:
            runs = runs_of_indices(token_lora_indices)
            plan = plan_rows(runs, n_rows, token_lora_indices.device)
            self._plans[n_rows] = plan
        return plan


def step_rows(wrapper: Any) -> StepRows:
    rows = wrapper.__dict__.get("_loragate_rows")
    if rows is None:
        rows = wrapper._loragate_rows = StepRows()  # noqa: SLF001 (our own attribute)
    assert isinstance(rows, StepRows)
    return rows


def install(punica_cpu_class: Any) -> None:
    """Replace ``update_metadata`` and ``add_lora_linear`` of vLLM's CPU punica wrapper.

    Calls ``add_lora_linear`` cannot serve (a caller's own ``buffer``, extra keyword
    arguments) go to vLLM's method, which runs the grouped ops.
    """
    original_update = punica_cpu_class.update_metadata
    original_linear = punica_cpu_class.add_lora_linear

    def update_metadata(self: Any, *args: Any, **kwargs: Any) -> None:
        original_update(self, *args, **kwargs)
        step_rows(self).invalidate()

    def add_lora_linear(
        self: Any,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
        *,
        buffer: Any = None,
        **kwargs: Any,
    ) -> None:
        if buffer is not None or kwargs or y.dim() != 2 or x.dim() != 2:
            return original_linear(  # type: ignore[no-any-return]
                self,
                y,
                x,
                lora_a_stacked,
                lora_b_stacked,
                scale,
                output_slices,
                buffer=buffer,
                **kwargs,
            )
        indices = self.token_lora_indices
        n_rows = min(x.shape[0], y.shape[0], indices.shape[0])
        plan = step_rows(self).plan(indices, n_rows)
        apply_fused(y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, plan)
        return None

    update_metadata.__wrapped__ = original_update  # type: ignore[attr-defined]
    add_lora_linear.__wrapped__ = original_linear  # type: ignore[attr-defined]
    punica_cpu_class.update_metadata = update_metadata
    punica_cpu_class.add_lora_linear = add_lora_linear
