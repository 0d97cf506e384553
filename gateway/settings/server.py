"""``server`` (bind address, open access, logs, drain, API docs), ``admin`` (the admin
API's keys) and ``metrics``."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from gateway.settings.section import Section
from gateway.settings.tenancy import (
    KeyConfig,
    TenancyConfig,
)

MIN_ADMIN_KEY_LENGTH = 16


class AdminSettings(Section):
    keys: list[KeyConfig] = Field(
        default=[],
        description="Admin keys as hashes (from `loragate keys create --admin`); the key "
        "itself is shown once and never stored.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key of the admin API (/admin/...). None: the admin API refuses "
        "every call. Set it with LORAGATE_ADMIN__API_KEY rather than in a file.",
    )

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_ADMIN_KEY_LENGTH} characters")
        return value


def is_loopback_host(host: str) -> bool:
    """True only for ``localhost`` and loopback addresses: nothing else on the network can
    connect there. Wildcards (``0.0.0.0``, ``::``, empty), other names and addresses are
    reachable from other machines."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerSettings(Section):
    host: str = Field(
        default="127.0.0.1",
        description="Address to bind. Without tenants or admin keys, only a loopback one "
        "(unless allow_open_access).",
    )
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    json_logs: bool = Field(default=False, description="One JSON object per log line.")
    allow_open_access: bool = Field(
        default=False,
        description="Serve without API keys on a non-loopback address (no tenants defined).",
    )
    open_mode_hosts: list[str] = Field(
        default_factory=list,
        description="In open mode (no keys), Host names accepted besides loopback ones "
        "(localhost, 127.0.0.1, [::1]): the name a local proxy forwards. Others get 403.",
    )
    drain_timeout: float = Field(
        default=30.0,
        ge=0,
        description="SIGTERM: seconds requests in flight may take to finish (new ones get "
        "503, /ready 503) before their streams are ended with an error event.",
    )
    docs: Literal["off", "admin", "open"] = Field(
        default="off",
        description="/openapi.json, /docs and /redoc: not served (off), with the admin key "
        "(admin), or to anyone (open). They describe every route, the admin API's too.",
    )

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def check_open_access(self, tenancy: TenancyConfig) -> None:
        """Without tenants or admin keys anyone may call the gateway, so it must be bound
        to a loopback address unless ``allow_open_access``. Run on the settings as loaded
        and again on the address actually bound (``loragate serve --host``)."""
        if tenancy.enabled or self.is_loopback or self.allow_open_access:
            return
        raise ValueError(
            f"server.host {self.host} is reachable from other machines but no tenants or "
            "admin keys are configured, so anyone could call it without a key; add "
            "tenants, bind a loopback address (127.0.0.1), or set "
            "server.allow_open_access: true"
        )


class MetricsSettings(Section):
    enabled: bool = True
    require_admin: bool = Field(
        default=True, description="GET /metrics needs an admin key (else it is open)."
    )
