"""Regenerate ``openai-openapi-subset.json`` from OpenAI's published OpenAPI spec.

The full ``openapi.json`` of https://github.com/openai/openai-openapi is about 3.4 MB;
the tests need only the response schemas below and what they ``$ref``, copied
verbatim. To refresh::

    git clone https://github.com/openai/openai-openapi /tmp/openai-openapi
    python tests/data/extract_openai_schemas.py /tmp/openai-openapi \
        --commit "$(git -C /tmp/openai-openapi rev-parse HEAD)"

The first argument is the repository checkout (``openapi.json`` and ``LICENSE`` are
read from it). The license (MIT) is copied into the output's ``x-source`` header.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
    "CreateEmbeddingResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
)
REF_PREFIX = "#/components/schemas/"
OUTPUT = Path(__file__).with_name("openai-openapi-subset.json")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for key, value in node.items() if key != "$ref" for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def closure(schemas: dict[str, Any], roots: tuple[str, ...]) -> dict[str, Any]:
    """The named schemas plus every schema they reach through ``$ref``."""
    keep: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = schemas[name]
        for ref in _refs(schemas[name]):
            if not ref.startswith(REF_PREFIX):
                raise ValueError(f"{name}: unsupported $ref {ref!r}")
            todo.append(ref.removeprefix(REF_PREFIX))
    return dict(sorted(keep.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of openai/openai-openapi")
    parser.add_argument("--commit", required=True, help="the checkout's commit id")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    spec = json.loads((args.checkout / "openapi.json").read_text(encoding="utf-8"))
    subset = {
        "x-source": {
            "repository": "https://github.com/openai/openai-openapi",
            "path": "openapi.json",
            "commit": args.commit,
            "openapi": spec["openapi"],
            "info.version": spec["info"]["version"],
            "note": "components.schemas reachable from the roots, copied verbatim; "
            "regenerate with tests/data/extract_openai_schemas.py",
            "roots": list(ROOTS),
            "license": (args.checkout / "LICENSE").read_text(encoding="utf-8"),
        },
        "components": {"schemas": closure(spec["components"]["schemas"], ROOTS)},
    }
    args.output.write_text(json.dumps(subset, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(subset['components']['schemas'])} schemas to {args.output}")


if __name__ == "__main__":
    main()
