"""``LoRASlotQuery``: a vLLM worker extension that reports which adapters fill the slots.

vLLM's public API lists the adapters in its CPU cache (``list_loras``) but not which of
them sit in the ``max_loras`` batch slots (GPU memory on a GPU). vLLM lets a deployment
add methods to its workers (``worker_extension_cls``), reachable through
``collective_rpc``; this one reads the LoRA manager's slot table. It touches vLLM
internals, so every step is guarded and any surprise answers ``None`` ("unknown")
rather than failing the caller.
"""

from __future__ import annotations

from typing import Any

WORKER_EXTENSION = "gateway.engine.lora_slots.LoRASlotQuery"
SLOTS_METHOD = "loragate_lora_slots"


class LoRASlotQuery:
    """Mixed into vLLM's worker class in every worker process (by vLLM itself)."""

    def loragate_lora_slots(self) -> list[int] | None:
        runner: Any = getattr(self, "model_runner", None)
        manager: Any = getattr(getattr(runner, "lora_manager", None), "_adapter_manager", None)
        slots = getattr(manager, "lora_index_to_id", None)
        if not isinstance(slots, list):
            return None
        return [int(i) for i in slots if isinstance(i, int) and i > 0]
