"""What every settings section shares: unknown keys refused; secrets named by an
environment variable or a file, never written in the config itself."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def check_api_key_source(
    env: str | None, file: Path | None, *, names: tuple[str, str] = ("api_key_env", "api_key_file")
) -> None:
    """A secret comes from at most one of an environment variable and a file, and the
    one named must exist now (a typo fails at start-up, not at the first request).
    ``names`` are the two fields' names, for the error messages."""
    env_field, file_field = names
    if env is not None and file is not None:
        raise ValueError(f"set {env_field} or {file_field}, not both")
    if env is not None and not os.environ.get(env):
        raise ValueError(f"the environment variable {env} ({env_field}) is not set")
    if file is not None and not file.is_file():
        raise ValueError(f"{file_field} {file} is not a readable file")


def read_api_key(env: str | None, file: Path | None) -> SecretStr | None:
    if env is not None:
        value = os.environ.get(env, "").strip()
    elif file is not None:
        value = file.read_text().strip()
    else:
        return None
    return SecretStr(value) if value else None
