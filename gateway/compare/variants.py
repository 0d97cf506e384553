"""The variants file: which ways of answering are compared, as YAML.

```yaml
max_tokens: 128                 # per answer (default 128; --max-tokens overrides)
variants:
  - name: base+prompt
    model: smollm2-135m-instruct          # the base model ...
    system: You are the support assistant of the BP-300 coffee machine.
  - name: base+prompt+rag
    model: smollm2-135m-instruct
    system: You are the support assistant of the BP-300 coffee machine.
    rag: {collection: brewpilot, top_k: 3}   # the gateway's `rag` extension
  - name: lora
    adapter: pirate                       # ... an adapter (name or name@version) ...
  - name: support-bot
    alias: support-bot                    # ... or a tenant alias (its policy applies)
```

``model``, ``adapter`` and ``alias`` are one namespace to the gateway (the request's
``model``); the three spellings only document intent, and exactly one is given.
Errors name the YAML path and its line (``variants.yaml: variants.2.rag.top_k (line
14): ...``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.compare.eval_set import EvalFileError

DEFAULT_MAX_TOKENS = 128


class RagSpec(BaseModel):
    """What the request's ``rag`` extension carries (``docs/rag.md``)."""

    model_config = ConfigDict(extra="forbid")

    collection: str | list[str] = Field(min_length=1)
    top_k: int | None = Field(default=None, ge=1, le=64)
    mode: Literal["dense", "bm25", "hybrid"] | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Variant(BaseModel):
    """One way of answering: a target model plus an optional system prompt and RAG."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+@-]*$")
    model: str | None = Field(default=None, min_length=1)
    adapter: str | None = Field(default=None, min_length=1)
    alias: str | None = Field(default=None, min_length=1)
    system: str | None = Field(default=None, min_length=1)
    rag: RagSpec | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Variant:
        given = [k for k in ("model", "adapter", "alias") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of model, adapter or alias (got {given or 'none'})")
        return self

    @property
    def target(self) -> str:
        """The request's ``model``."""
        target = self.model or self.adapter or self.alias
        assert target is not None
        return target


class VariantSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1, le=8192)
    variants: list[Variant] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> VariantSet:
        seen: set[str] = set()
        for variant in self.variants:
            if variant.name in seen:
                raise ValueError(f"variant name {variant.name!r} is used twice")
            seen.add(variant.name)
        return self


def fingerprint(variant: Variant, max_tokens: int) -> str:
    """Changes whenever what the variant sends changes: a rerun redoes its answers."""
    data = {"variant": variant.model_dump(exclude={"name"}), "max_tokens": max_tokens}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_variants(path: Path) -> VariantSet:
    """Parse and validate ``path``; raises ``EvalFileError`` with YAML paths and lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalFileError(path, [f"cannot read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise EvalFileError(path, [f"{where}not valid YAML ({problem})"]) from None
    if not isinstance(data, dict):
        raise EvalFileError(path, ["expected a mapping with a 'variants' list"])
    try:
        return VariantSet.model_validate(data)
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            name = ".".join(str(p) for p in loc) or "(file)"
            line = _line_of(root, loc)
            at = f" (line {line})" if line else ""
            errors.append(f"{name}{at}: {str(error['msg']).removeprefix('Value error, ')}")
        raise EvalFileError(path, errors) from None


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest node on ``loc`` that exists in the document."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
            if child is None:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            child = node.value[part]
        else:
            break
        node = child
        line = node.start_mark.line + 1
    return line
