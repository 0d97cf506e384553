"""What the served base model looks like, read once at start-up for adapter validation.

Shapes come from ``config.json`` and the safetensors *headers* (``safe_open`` +
``get_slice(...).get_shape()``): no weight is loaded. The identity an adapter must
match is configurable (``BaseMatch``): its ``base_model_name_or_path`` must name the
served base (``NAME``, the default), or only its tensor shapes must fit (``SHAPES``).
Shapes are checked in both modes. ``fingerprint`` digests architecture and shapes; the
registry stores it per entry so adapters validated against another base are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from safetensors import safe_open

from adapters.errors import BaseModelSpecError

EMBEDDING_SUFFIXES = ("embed_tokens", "wte", "word_embeddings", "embed_in")
INDEX_FILE = "model.safetensors.index.json"


class BaseMatch(StrEnum):
    """How an adapter's ``base_model_name_or_path`` must match the served base."""

    NAME = "name"
    SHAPES = "shapes"


def _normalise(name: str) -> str:
    return name.strip().rstrip("/")


def _name_variants(name: str) -> set[str]:
    norm = _normalise(name)
    variants = {norm} if norm else set()
    if norm and os.path.isabs(norm):
        variants.add(os.path.realpath(norm))
    return variants


@dataclass(frozen=True)
class BaseModelSpec:
    """The served base model: its accepted names, architecture and layer shapes.

    ``weight_shapes`` maps a module path (``model.layers.0.self_attn.q_proj``) to the
    shape of its 2-D weight: ``(out_features, in_features)`` for a linear layer,
    ``(num_embeddings, embedding_dim)`` for an embedding.
    """

    name: str
    architecture: str
    weight_shapes: Mapping[str, tuple[int, ...]]
    accepted_names: frozenset[str]
    match: BaseMatch = BaseMatch.NAME

    @classmethod
    def from_directory(
        cls,
        path: Path | str,
        *,
        name: str | None = None,
        aliases: Iterable[str] = (),
        match: BaseMatch | str = BaseMatch.NAME,
    ) -> BaseModelSpec:
        """Describe the Hugging Face model folder at ``path`` (config.json + safetensors).

        ``name`` is the served model name; ``aliases`` are further names an adapter's
        ``base_model_name_or_path`` may carry (e.g. the hub id the base came from).
        """
        root = Path(path)
        config = cls._read_config(root)
        shapes = cls._read_shapes(root)
        if config.get("tie_word_embeddings") and "lm_head" not in shapes:
            embed = next((m for m in shapes if m.endswith(".embed_tokens")), None)
            if embed is not None:
                shapes["lm_head"] = shapes[embed]
        architectures = config.get("architectures") or [config.get("model_type", "unknown")]
        accepted: set[str] = set()
        for candidate in [name, str(root), str(root.resolve()), config.get("_name_or_path")]:
            if isinstance(candidate, str):
                accepted |= _name_variants(candidate)
        for alias in aliases:
            accepted |= _name_variants(alias)
        return cls(
            name=name or root.name,
            architecture=str(architectures[0]),
            weight_shapes=shapes,
            accepted_names=frozenset(accepted),
            match=BaseMatch(match),
        )

    @staticmethod
    def _read_config(root: Path) -> dict[str, Any]:
        try:
            config = json.loads((root / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise BaseModelSpecError(f"Cannot read the base model's config.json: {exc}") from None
        if not isinstance(config, dict):
            raise BaseModelSpecError("The base model's config.json is not a JSON object.")
        return config

    @staticmethod
    def _weight_files(root: Path) -> list[Path]:
        index = root / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                names = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise BaseModelSpecError(f"Cannot read {INDEX_FILE}: {exc}") from None
            return [root / Path(name).name for name in names]
        files = sorted(root.glob("*.safetensors"))
        if not files:
            raise BaseModelSpecError(f"No safetensors weights in the base model folder {root}.")
        return files

    @classmethod
    def _read_shapes(cls, root: Path) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for file in cls._weight_files(root):
            try:
                with safe_open(str(file), framework="numpy") as handle:
                    for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                        shape = tuple(handle.get_slice(key).get_shape())
                        if key.endswith(".weight") and len(shape) == 2:
                            shapes[key.removesuffix(".weight")] = shape
            except (OSError, ValueError, RuntimeError) as exc:
                raise BaseModelSpecError(f"Cannot read the header of {file}: {exc}") from None
        if not shapes:
            raise BaseModelSpecError(f"No 2-D weights found in the base model folder {root}.")
        return shapes

    @property
    def fingerprint(self) -> str:
        """sha256 over architecture and every module's weight shape (first 16 hex digits)."""
        body = json.dumps([self.architecture, sorted(self.weight_shapes.items())])
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def accepts_name(self, base_model_name_or_path: object) -> bool:
        """Whether an adapter citing this base name may be served here (per ``match``)."""
        if self.match is BaseMatch.SHAPES:
            return True
        if not isinstance(base_model_name_or_path, str):
            return False
        return bool(_name_variants(base_model_name_or_path) & self.accepted_names)

    def is_embedding(self, module: str) -> bool:
        """Whether ``module`` is an input embedding (LoRA A/B are stored transposed)."""
        return module.rsplit(".", 1)[-1] in EMBEDDING_SUFFIXES

    def modules_for_target(self, target: str) -> list[str]:
        """Modules a PEFT ``target_modules`` entry selects: the name or a dotted suffix."""
        return [m for m in self.weight_shapes if m == target or m.endswith("." + target)]

    def modules_for_regex(self, pattern: str) -> list[str]:
        """Modules a PEFT regex ``target_modules`` string selects (``re.fullmatch``)."""
        regex = re.compile(pattern)
        return [m for m in self.weight_shapes if regex.fullmatch(m)]
