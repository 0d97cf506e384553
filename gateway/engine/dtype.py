"""``engine.dtype: auto``: the fastest exact-enough dtype for the machine the engine runs on.

bfloat16 where the hardware computes it natively (a GPU, or a CPU with ``avx512_bf16`` /
AMX); float32 on other CPUs, where vLLM emulates bf16: measured on a 2-core AVX2 EPYC,
vLLM's bench client gave 9.9 output tok/s in bf16 against 40.9 in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Dtype = Literal["auto", "bfloat16", "float16", "float32"]

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class DtypeChoice:
    dtype: Dtype
    reason: str


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def choose_dtype(
    requested: Dtype, *, gpu: bool | None = None, flags: frozenset[str] | None = None
) -> DtypeChoice:
    """The dtype to run; ``gpu``/``flags`` default to what this machine has."""
    if requested != "auto":
        return DtypeChoice(requested, "set by engine.dtype")
    if gpu is None:
        import torch

        gpu = bool(torch.cuda.is_available())
    if gpu:
        return DtypeChoice("bfloat16", "GPU")
    native = NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags)
    if native:
        return DtypeChoice("bfloat16", f"CPU with native bf16 ({', '.join(sorted(native))})")
    return DtypeChoice(
        "float32", "CPU without native bf16 (no avx512_bf16/amx_bf16): bf16 would be emulated"
    )
