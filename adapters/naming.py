"""Adapter names, versions and the ``name`` / ``name@version`` references that pick them.

Names and versions become folder names in the store, so the rule doubles as the path
traversal guard: lower-case letters, digits, ``.``, ``_`` and ``-``, starting with a
letter or digit (so never ``.`` or ``..``), at most 64 characters, never ``@`` or ``/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters.errors import InvalidAdapterNameError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
VERSION_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
REF_SEPARATOR = "@"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid adapter name, else raise ``InvalidAdapterNameError``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidAdapterNameError(
            f"Invalid adapter name {name!r}: use 1-64 characters from a-z, 0-9, '.', '_', '-',"
            " starting with a letter or digit.",
            param="name",
        )
    return name


def check_version(version: str) -> str:
    """Return ``version`` if it is a valid version label, else raise ``InvalidAdapterNameError``."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise InvalidAdapterNameError(
            f"Invalid adapter version {version!r}: use 1-64 characters from a-z, 0-9, '.', '_',"
            " '-', starting with a letter or digit.",
            code="invalid_adapter_version",
            param="version",
        )
    return version


@dataclass(frozen=True)
class AdapterRef:
    """A parsed model reference: ``name`` (the active version) or ``name@version``."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        """Parse ``name`` or ``name@version``; raises ``InvalidAdapterNameError`` (param model)."""
        name, sep, version = text.partition(REF_SEPARATOR)
        try:
            check_name(name)
            if sep:
                check_version(version)
        except InvalidAdapterNameError as exc:
            raise InvalidAdapterNameError(exc.message, code=exc.code, param="model") from None
        return cls(name=name, version=version if sep else None)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}{REF_SEPARATOR}{self.version}"
