"""Reload the tenancy part of the config file without a restart (SIGHUP or admin call)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError

from gateway.config import ENGINE_KINDS, Settings
from gateway.errors import InvalidRequestError
from gateway.tenancy.config import TenancyConfig

if TYPE_CHECKING:
    from gateway.state import GatewayState

logger = logging.getLogger(__name__)


def describe(error: ValidationError) -> str:
    """Each error as ``path.to.field: message`` (never the offending value)."""
    lines = []
    for e in error.errors():
        loc = list(e["loc"])
        if loc[:1] == ["engine"] and len(loc) > 2 and loc[1] in ENGINE_KINDS:
            del loc[1]  # the union's tag: the user wrote engine.max_loras, not engine.vllm...
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc)
        lines.append(f"{path.replace('.[', '[')}: {e['msg']}")
    return "; ".join(lines)


def reload_tenancy(state: GatewayState, path: Path | None) -> TenancyConfig:
    """Validate the file whole; swap in its tenants, keys and policies, or change nothing."""
    if path is None:
        raise InvalidRequestError(
            "This gateway was not started from a config file; nothing to reload.",
            code="no_config_file",
        )
    try:
        settings = Settings.load(path)
    except ValidationError as exc:
        logger.warning("config reload refused: %d error(s)", exc.error_count())
        raise InvalidRequestError(
            f"The new config is invalid, the old one stays: {describe(exc)}",
            code="invalid_config",
        ) from None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        logger.warning("config reload refused: %s", type(exc).__name__)
        raise InvalidRequestError(
            f"The new config cannot be read, the old one stays: {exc}", code="invalid_config"
        ) from None
    tenancy = settings.tenancy()
    state.gatekeeper.reload(tenancy)
    logger.info("config reloaded: %d tenant(s)", len(tenancy.tenants))
    return tenancy
