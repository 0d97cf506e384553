"""Reload the tenancy part of the config file, and the admin key, without a restart
(SIGHUP or admin call)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from gateway.config import Settings
from gateway.errors import InvalidRequestError
from gateway.tenancy.config import TenancyConfig

if TYPE_CHECKING:
    from gateway.state import GatewayState

logger = logging.getLogger(__name__)


def describe(error: ValidationError) -> str:
    """Each error as ``path.to.field: message`` (never the offending value)."""
    lines = []
    for e in error.errors():
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"])
        lines.append(f"{path.replace('.[', '[')}: {e['msg']}" if path else e["msg"])
    return "; ".join(lines)


def _load(path: Path) -> Settings:
    """The file's settings, or a 400 saying why not (field paths and YAML line numbers,
    never the file's text: a secret may sit on the offending line)."""
    try:
        return Settings.load(path)
    except ValidationError as exc:
        logger.warning("config reload refused: %d error(s)", exc.error_count())
        raise InvalidRequestError(
            f"The new config is invalid, the old one stays: {describe(exc)}",
            code="invalid_config",
        ) from None
    except (OSError, ValueError) as exc:  # ConfigFileError is a ValueError
        logger.warning("config reload refused: %s", type(exc).__name__)
        raise InvalidRequestError(
            f"The new config cannot be read, the old one stays: {exc}", code="invalid_config"
        ) from None


def _refuse_switching_keys_off(current: TenancyConfig, new: TenancyConfig) -> None:
    """A reload never turns a keyed gateway into an open one: emptying ``tenants`` and
    ``admin.keys`` by mistake (or by a bad merge) would let anyone call it, and the
    loopback-only rule for open mode was checked against the address bound at start-up,
    which a reload cannot see. Going open takes a restart, which checks that rule."""
    if current.enabled and not new.enabled:
        logger.warning("config reload refused: it would switch API keys off")
        raise InvalidRequestError(
            "The new config has no tenants and no admin keys: applying it would serve "
            "without API keys. Refused, the old config stays; restart the gateway to serve "
            "without keys.",
            code="invalid_config",
        )


def reload_tenancy(state: GatewayState, path: Path | None) -> TenancyConfig:
    """Validate the file whole; swap in its tenants, keys, policies and admin key, or
    change nothing."""
    if path is None:
        raise InvalidRequestError(
            "This gateway was not started from a config file; nothing to reload.",
            code="no_config_file",
        )
    settings = _load(path)
    tenancy = settings.tenancy()
    _refuse_switching_keys_off(state.gatekeeper.directory.config, tenancy)
    state.gatekeeper.reload(tenancy)
    state.admin_guard.rotate(settings.admin.api_key)
    logger.info("config reloaded: %d tenant(s)", len(tenancy.tenants))
    return tenancy
