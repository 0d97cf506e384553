"""Where an adapter version's weights are right now, from the engine's own snapshot.

- ``gpu_slot``: in one of the engine's ``max_loras`` batch slots (GPU memory on a GPU;
  on a CPU the same slot buffers in RAM): it can join the next batch without a copy.
- ``cpu_cache``: loaded in the engine's adapter cache (``max_cpu_loras``), not in a slot.
- ``disk``: only the registry's validated copy; the first request loads it.

The slot table comes from a vLLM worker extension (``gateway.engine.lora_slots``).
When an engine cannot report it (``AdapterResidency.slots is None``), nothing is
claimed to be in a slot: loaded adapters are reported as ``cpu_cache`` and listings
say ``slots_known: false``.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.engine.interface import AdapterResidency


class Residency(StrEnum):
    GPU_SLOT = "gpu_slot"
    CPU_CACHE = "cpu_cache"
    DISK = "disk"


def residency_of(lora_id: int, stats: AdapterResidency) -> Residency:
    if stats.slots is not None and lora_id in stats.slots:
        return Residency.GPU_SLOT
    if lora_id in stats.loaded:
        return Residency.CPU_CACHE
    return Residency.DISK
