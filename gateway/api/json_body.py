"""Request bodies validated from their bytes: pydantic's own JSON parser, errors in the
same form as FastAPI's body validation (so one handler renders both)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def validated(model: type[Model], data: bytes | Mapping[str, object]) -> Model:
    """``data`` as ``model``; a ``RequestValidationError`` (400 in OpenAI's form) if not.

    pydantic's JSON parser stops at a nesting depth that Python's ``json`` still reads
    (a deep JSON schema in ``response_format``): such a body is parsed again by ``json``,
    so the refusal names the field that is too deep, not "unparseable JSON"."""
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        if isinstance(data, bytes) and exc.errors()[0]["type"] == "json_invalid":
            try:
                parsed = json.loads(data)
            except (ValueError, RecursionError):
                raise RequestValidationError(exc.errors()) from None
            return validated(model, parsed)
        raise RequestValidationError(exc.errors()) from None
