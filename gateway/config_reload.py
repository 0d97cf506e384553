"""Load the config file with ``loragate serve``'s flags on top; reload its tenancy part,
and the admin key, without a restart (SIGHUP or admin call), saying which sections were
applied and which changed but wait for a restart."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from gateway.errors import InvalidRequestError
from gateway.settings import Settings, describe, read_config_file
from gateway.settings.tenancy import TenancyConfig

if TYPE_CHECKING:
    from gateway.state import GatewayState

logger = logging.getLogger(__name__)

RELOADABLE = ("admin", "prompts", "tenants", "pricing")
"""The sections a reload swaps in (whole); every other one is read once, at start-up."""

ConfigOverrides = Mapping[str, Any]
"""``loragate serve``'s flags as sections, e.g. ``{"model": {"path": ...}, "adapters":
[{"name": ..., "path": ...}], "engine": {"extra_args": {...}}, "server": {"port": ...}}``."""

_NO_VARIABLE = "\0"
"""An environment prefix no variable name has (names cannot hold a NUL)."""


def apply_overrides(data: Mapping[str, Any], overrides: ConfigOverrides) -> dict[str, Any]:
    """``data``'s sections with ``overrides`` on top: mappings merge key by key,
    ``adapters`` by name (a flag's adapter replaces the file's of that name), anything
    else is replaced."""
    merged = dict(data)
    for name, value in overrides.items():
        current = _plain(merged.get(name))
        if name == "adapters" and isinstance(current, list):
            names = {_plain(a)["name"] for a in value}
            merged[name] = [a for a in current if _plain(a).get("name") not in names] + list(value)
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[name] = apply_overrides(current, value)
        else:
            merged[name] = value
    return merged


def _plain(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


def load_settings(path: Path | None, overrides: ConfigOverrides | None = None) -> Settings:
    """The file's settings (none: only the flags and the environment), with ``overrides``
    (the command line's) winning over both the file and ``LORAGATE_*`` variables.

    Raises what ``Settings.load`` raises.
    """
    data = read_config_file(path) if path is not None else {}
    settings = Settings.load(None, **apply_overrides(data, overrides or {}))
    if not overrides:
        return settings
    # Validated once more with the environment left out, the flags on top of what the
    # file and the environment gave: a flag beats a variable as it beats the file.
    # (``_env_prefix`` is pydantic-settings' own argument; mypy's plugin does not know it.)
    sections = {name: getattr(settings, name) for name in type(settings).model_fields}
    merged = apply_overrides(sections, overrides)
    return Settings(_env_prefix=_NO_VARIABLE, **merged)  # type: ignore[call-arg]


@dataclass(frozen=True)
class ReloadReport:
    """What a reload did: ``applied`` sections are in effect for new requests;
    ``restart_required`` ones differ from the running settings but apply only at the next
    start (section names only: values may be secrets)."""

    tenants: list[str]
    applied: list[str]
    restart_required: list[str]

    def as_response(self) -> dict[str, Any]:
        return {
            "status": "reloaded",
            "tenants": self.tenants,
            "applied": self.applied,
            "restart_required": self.restart_required,
        }


def sections_needing_restart(running: Settings, new: Settings) -> list[str]:
    """The sections outside ``RELOADABLE`` whose values differ."""
    return [
        name
        for name in type(new).model_fields
        if name not in RELOADABLE and getattr(new, name) != getattr(running, name)
    ]


def _load(path: Path, overrides: ConfigOverrides) -> Settings:
    """The file's settings (with the start-up flags), or a 400 saying why not (field paths
    and YAML line numbers, never the file's text: a secret may sit on the offending line)."""
    try:
        return load_settings(path, overrides)
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
    loopback-only rule for open mode is checked against the address bound at start-up,
    which a reload cannot see. Going open takes a restart, which checks that rule."""
    if current.enabled and not new.enabled:
        logger.warning("config reload refused: it would switch API keys off")
        raise InvalidRequestError(
            "The new config has no tenants and no admin keys: applying it would serve "
            "without API keys. Refused, the old config stays; restart the gateway to serve "
            "without keys.",
            code="invalid_config",
        )


def reload_tenancy(state: GatewayState, path: Path | None) -> ReloadReport:
    """Validate the file whole (with the flags the gateway started with); swap in its
    tenants, keys, policies and admin key, or change nothing. Reloads are serialized
    (``state.reload_lock``): the file read last is the one applied, whole. Sections that
    changed but only apply at start-up are reported and logged, not applied."""
    if path is None:
        raise InvalidRequestError(
            "This gateway was not started from a config file; nothing to reload.",
            code="no_config_file",
        )
    with state.reload_lock:
        settings = _load(path, state.config_overrides)
        tenancy = settings.tenancy()
        _refuse_switching_keys_off(state.gatekeeper.directory.config, tenancy)
        state.gatekeeper.reload(tenancy)
        state.admin_guard.rotate(settings.admin.api_key)
    report = ReloadReport(
        tenants=sorted(tenancy.tenants),
        applied=list(RELOADABLE),
        restart_required=sections_needing_restart(state.settings, settings),
    )
    logger.info(
        "config reloaded: applied %s (%d tenant(s))",
        ", ".join(report.applied),
        len(tenancy.tenants),
    )
    if report.restart_required:
        logger.warning(
            "config reload: changed but not applied until a restart: %s",
            ", ".join(report.restart_required),
        )
    return report
