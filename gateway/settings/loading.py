"""Reading the config file and reporting what is wrong in it, never quoting its values
(a value may be a secret)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)


class ConfigFileError(ValueError):
    """The config file is not a YAML mapping of section names.

    The message gives the line and column of a YAML error but never the text there:
    the offending line may hold a secret (an ``api_key``), and this message reaches
    the admin API's error body, the console and logs.
    """


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _yaml_error(exc: yaml.YAMLError) -> ConfigFileError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None)
    # PyYAML quotes bits of the document in its problem text (an alias, a character).
    detail = f": {_QUOTED.sub('...', problem)}" if isinstance(problem, str) else ""
    return ConfigFileError(f"invalid YAML{where}{detail}")


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's top-level mapping, each key a section name (a string)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise _yaml_error(exc) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigFileError("the top level must be a mapping of sections (model:, server:...)")
    for key in loaded:
        if not isinstance(key, str):
            raise ConfigFileError(
                f"top-level keys must be section names; found a key of type {type(key).__name__}"
            )
    return loaded


def describe(error: ValidationError) -> str:
    """Each error as ``path.to.field: message`` (never the offending value)."""
    lines = []
    for e in error.errors():
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"])
        lines.append(f"{path.replace('.[', '[')}: {e['msg']}" if path else e["msg"])
    return "; ".join(lines)


def config_error_lines(source: Path | str, exc: Exception) -> list[str]:
    """What a command prints for a config it cannot load: each error with the path to
    its field, or a YAML line and column; never a value from the file (pydantic's own
    text quotes them, and a secret may be one)."""
    if isinstance(exc, ValidationError):
        return [f"{source}: {exc.error_count()} error(s)"] + [
            f"  {line}" for line in describe(exc).split("; ")
        ]
    return [f"{source}: {exc}"]
