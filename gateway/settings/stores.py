"""``shared_store`` (registry and usage shared by several gateways) and ``responses``
(stored ``/v1/responses``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from gateway.settings.section import Section, check_api_key_source, read_api_key


class SharedStoreSettings(Section):
    """Where several gateways keep the adapter registry and the usage records. ``none``:
    this gateway alone (``registry.json`` and SQLite in ``registry.data_dir``, the
    default). ``postgres``: one PostgreSQL for every gateway in front of the same
    replicas; ``registry.data_dir`` must then be a volume they all mount. The URL (it
    holds a password) comes from an environment variable or a mounted secret file."""

    kind: Literal["none", "postgres"] = "none"
    url_env: str | None = Field(
        default=None, description="Environment variable holding the postgresql:// URL."
    )
    url_file: Path | None = Field(
        default=None, description="File holding the postgresql:// URL (a mounted secret)."
    )
    timeout: float = Field(
        default=5.0, gt=0, le=60, description="Seconds to connect or run one statement."
    )
    refresh_seconds: float = Field(
        default=0.5,
        gt=0,
        le=30,
        description="How often a gateway checks for registry changes made by the others "
        "(the bound on how stale its view is).",
    )

    @model_validator(mode="after")
    def _url_source(self) -> SharedStoreSettings:
        if self.kind == "postgres":
            if (self.url_env is None) == (self.url_file is None):
                raise ValueError("kind postgres needs url_env or url_file (one of them)")
            check_api_key_source(self.url_env, self.url_file, names=("url_env", "url_file"))
        return self

    def url(self) -> str:
        """The URL read now from the environment or the file (never logged)."""
        secret = read_api_key(self.url_env, self.url_file)
        if secret is None:
            raise ValueError("shared_store: the PostgreSQL URL is empty")
        return secret.get_secret_value()


class ResponsesSettings(Section):
    """Stored responses of ``/v1/responses`` (``store: true``, OpenAI's default): kept in
    SQLite in ``registry.data_dir``, or in the shared PostgreSQL (``shared_store``)."""

    retention_seconds: float = Field(
        default=30 * 24 * 3600,
        gt=0,
        description="How long a stored response can be retrieved or continued (then purged).",
    )
    max_stored_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest conversation (earlier turns plus this input, as JSON) a stored "
        "response may hold; a longer one is refused unless it is sent with store: false.",
    )
