"""Size and shape limits applied to every adapter before it reaches the store."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024


class AdapterLimits(BaseModel):
    """Operator-set limits; the defaults fit adapters of models up to a few billion params.

    ``max_lora_rank`` must equal the engine's own ``max_lora_rank`` so that an adapter
    the registry accepts is one the engine can load.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_lora_rank: int = Field(default=64, gt=0, description="Largest LoRA rank accepted.")
    max_weights_bytes: int = Field(
        default=1024 * MiB, gt=0, description="Largest adapter_model.safetensors accepted."
    )
    max_config_bytes: int = Field(default=1 * MiB, gt=0, description="Largest adapter_config.json.")
    max_header_bytes: int = Field(
        default=8 * MiB, gt=0, description="Largest safetensors JSON header read from an adapter."
    )
    max_files: int = Field(
        default=64, gt=0, description="Most files in an adapter folder, archive or remote folder."
    )
    max_total_bytes: int = Field(
        default=2048 * MiB,
        gt=0,
        description="Most bytes unpacked from an archive or copied from a source in total.",
    )
    max_archive_bytes: int = Field(
        default=2048 * MiB, gt=0, description="Largest uploaded or fetched archive (compressed)."
    )
