"""``tracing``: OpenTelemetry traces (docs/tracing.md)."""

from __future__ import annotations

import re

from pydantic import (
    Field,
    field_validator,
)

from gateway.settings.section import Section


class TracingSettings(Section):
    """OpenTelemetry traces (docs/tracing.md). A field left out here falls back to the
    standard ``OTEL_*`` variable the SDK reads; with neither, tracing is off and costs
    nothing (no tracer provider, no spans)."""

    enabled: bool | None = Field(
        default=None,
        description="On or off whatever the environment says; null: on when an OTLP "
        "endpoint is set (here, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
        "OTEL_EXPORTER_OTLP_ENDPOINT) and OTEL_SDK_DISABLED is not true.",
    )
    endpoint: str | None = Field(
        default=None,
        description="The collector's OTLP/HTTP base URL (`/v1/traces` is added); "
        "default: the OTEL_EXPORTER_OTLP_* variables.",
    )
    service_name: str | None = Field(
        default=None, description="Default: OTEL_SERVICE_NAME, else `loragate`."
    )
    sample_ratio: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Share of new traces kept (a caller's sampled flag is followed); "
        "default: OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, else every trace.",
    )
    capture_content: bool = Field(
        default=False,
        description="Record prompts and outputs as span events (GenAI conventions). "
        "Off: spans carry sizes, models and timings, never text.",
    )

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return value
