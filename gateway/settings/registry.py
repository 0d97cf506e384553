"""``registry``: where adapters live and where the admin API may register them from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
)

from gateway.settings.section import Section

MIB = 1024 * 1024


DEFAULT_URI_PROTOCOLS = ("s3", "gs", "gcs", "az", "abfs", "hf", "https")


class RegistrySettings(Section):
    """The adapter registry: where adapters live and where they may be registered from."""

    data_dir: Path = Field(
        default=Path(".loragate"),
        description="Folder of the registry (registry.json and validated adapter copies).",
    )
    allowed_roots: list[Path] = Field(
        default=[],
        description="Local folders the admin API may register adapters from (by path or "
        "file:// URI). Empty: registration by local path is refused.",
    )
    allowed_protocols: list[str] = Field(
        default=list(DEFAULT_URI_PROTOCOLS),
        description="fsspec protocols the admin API may register adapters from. `memory` "
        "(process-wide scratch space), `file` and `http` are not in the default.",
    )
    allow_internal_hosts: bool = Field(
        default=False,
        description="http(s) adapter URIs may reach loopback, private, link-local and "
        "reserved addresses (an internal artifact server). This also opens this machine's "
        "own services and a cloud metadata endpoint to whoever holds an admin key.",
    )
    base_match: Literal["name", "shapes"] = Field(
        default="name",
        description="name: an adapter's base_model_name_or_path must name the served base "
        "(its path, served name or an alias); shapes: only its tensor shapes must fit.",
    )
    base_aliases: list[str] = Field(
        default=[], description="Further names of the base model, e.g. its Hugging Face id."
    )
    max_weights_mib: int = Field(default=1024, ge=1, description="Largest adapter weights file.")
    max_upload_mib: int = Field(default=1024, ge=1, description="Largest uploaded archive.")
    pin_reserve: int = Field(
        default=1,
        ge=1,
        description="Engine slots (max_loras) never given to pinned adapters, so unpinned "
        "ones can always be served.",
    )
