"""``rollouts``: shadow copies of split requests and automatic canary rollback."""

from __future__ import annotations

from pydantic import Field

from gateway.settings.section import Section


class RolloutSettings(Section):
    """Bounds of shadow mode and the pace of canary rollback checks (docs/adapters.md)."""

    shadow_max_in_flight: int = Field(
        default=2,
        ge=0,
        le=64,
        description="Shadow requests in the engine at once on this gateway, all tenants "
        "together; past it a shadow is skipped. 0: no shadows.",
    )
    shadow_log_entries: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Shadowed requests kept per opted-in tenant (the oldest go first).",
    )
    shadow_log_mib: float = Field(
        default=1.0,
        gt=0,
        le=1024,
        description="MiB of answer text kept per opted-in tenant (the oldest go first).",
    )
    rollback_check_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often a split's canaries are judged against its rollback bounds.",
    )
