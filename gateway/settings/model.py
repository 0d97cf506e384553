"""``model`` (the base model) and ``adapters`` (adapters served from start-up)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import (
    Field,
    field_validator,
)

from gateway.settings.section import Section

ADAPTER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ModelSettings(Section):
    path: Path = Field(description="Hugging Face model folder of the base model.")
    name: str | None = Field(
        default=None, description="Id clients use for the base model (default: folder name)."
    )

    @property
    def served_name(self) -> str:
        return self.name or self.path.name


class AdapterSettings(Section):
    name: str
    path: Path

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not ADAPTER_NAME.match(value):
            raise ValueError("adapter names match [a-z0-9][a-z0-9._-]{0,63}")
        return value
