"""Check response bodies against OpenAI's published OpenAPI schemas.

The schemas are a verbatim subset of ``openapi.json`` from openai/openai-openapi
(``tests/data/openai-openapi-subset.json``; source commit and MIT license in its
``x-source`` header). The spec is OpenAPI 3.1 but still uses OpenAPI-isms, turned into
plain JSON Schema (Draft 2020-12) before validating:

- ``nullable: true`` -> the schema, or ``null`` (``anyOf``);
- ``x-*`` extension keys are dropped (they carry no constraints);
- ``#/components/schemas/...`` references resolve through a ``referencing`` registry.

Properties the schema does not name are allowed, as JSON Schema allows them by default
(our documented extensions, such as ``citations``, must not fail).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parents[1] / "data" / "openai-openapi-subset.json"
SPEC_URI = "urn:openai-openapi"

# OpenAI's spec gives streamed and whole text completions one schema, whose choices
# require a string `finish_reason`. A streamed chunk has none until its choice ends, and
# the API sends `"finish_reason": null` then (the key is required, so it cannot be left
# out). This name is ours, not the spec's: the same schema with that one key nullable.
COMPLETION_STREAM = "CreateCompletionStreamResponse"

# Keywords whose value is a map of name -> schema (its keys are names, never keywords).
_SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}
# Keywords whose value is data, not schema: copied as is.
_DATA = {"enum", "const", "default", "example", "examples", "required", "discriminator"}


def to_json_schema(node: Any) -> Any:
    """One OpenAPI 3.1 schema node as Draft 2020-12 JSON Schema."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-") or key == "nullable":
            continue
        if key in _DATA:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: to_json_schema(schema) for name, schema in value.items()}
        else:
            out[key] = to_json_schema(value)
    if node.get("nullable") is True:
        # Wrapping (not `type: [T, "null"]`) also covers `enum`, `$ref` and `anyOf` nodes.
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _with_errata(schemas: dict[str, Any]) -> dict[str, Any]:
    schemas = dict(schemas)
    stream = copy.deepcopy(schemas["CreateCompletionResponse"])
    stream["properties"]["choices"]["items"]["properties"]["finish_reason"]["nullable"] = True
    schemas[COMPLETION_STREAM] = stream
    return schemas


@cache
def _spec() -> tuple[dict[str, Any], Registry]:
    raw = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    schemas = _with_errata(raw["components"]["schemas"])
    document = {"components": {"schemas": to_json_schema(schemas)}}
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return schemas, Registry().with_resource(SPEC_URI, resource)


@cache
def validator(schema_name: str) -> Draft202012Validator:
    schemas, registry = _spec()
    if schema_name not in schemas:
        raise KeyError(f"{schema_name!r} is not in {SPEC_PATH.name}: {sorted(schemas)}")
    root = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(root, registry=registry)


def _leaves(error: ValidationError) -> list[ValidationError]:
    """The innermost failures; for anyOf/oneOf, those of the non-null branches (a value
    that is not null is better explained by the branch it was meant for)."""
    if not error.context:
        return [error]
    branches = [e for e in error.context if (e.validator, e.validator_value) != ("type", "null")]
    return [leaf for e in branches or error.context for leaf in _leaves(e)]


def _describe(error: ValidationError) -> str:
    value = json.dumps(error.instance)
    return f"  at {error.json_path}: {value[:200]} -- {error.message[:300]}"


def openai_schema_errors(body: Any, schema_name: str) -> list[str]:
    """Every violation, one line each: JSON path, offending value, reason."""
    leaves = [leaf for e in validator(schema_name).iter_errors(body) for leaf in _leaves(e)]
    return [_describe(e) for e in sorted(leaves, key=lambda e: e.json_path)]


def assert_openai_schema(body: Any, schema_name: str) -> None:
    """Fail, naming each offending JSON path and value, unless ``body`` validates."""
    problems = openai_schema_errors(body, schema_name)
    assert not problems, f"response does not match OpenAI's {schema_name}:\n" + "\n".join(problems)
