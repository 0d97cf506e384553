"""Checks an adapter folder against the served base model before it reaches the store.

Two steps, so nothing unsafe is even copied: ``inspect_listing`` looks at the source
folder's file names and sizes (pickles, file count, required files, size limits);
``validate`` then reads the staged copy's ``adapter_config.json`` and safetensors
header and checks them against ``BaseModelSpec``. Both raise typed
``AdapterValidationError`` subclasses; neither loads tensor data.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from adapters.base_model import BaseModelSpec
from adapters.errors import (
    AdapterConfigError,
    AdapterTooLargeError,
    BaseModelMismatchError,
    InvalidWeightsError,
    RankTooLargeError,
    TensorShapeMismatchError,
    UnknownTargetModuleError,
    UnsafeWeightsFormatError,
    UnsupportedAdapterError,
)
from adapters.limits import AdapterLimits
from adapters.safetensors_header import FLOAT_DTYPES, TensorInfo, read_safetensors_header

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
STORED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
LORA_KEY = re.compile(
    r"base_model\.model\.(?P<module>.+)\."
    r"(?P<kind>lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B)"
)
# PEFT init schemes that only set initial weights (vLLM's list); others alter the base.
PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


@dataclass(frozen=True)
class ValidatedAdapter:
    """What validation learned about an adapter; the registry copies it into its entry."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str | None
    size_bytes: int


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _pattern_value(pattern: dict[str, Any], module: str) -> Any:
    # PEFT's rule (and vLLM's): a key matches a dotted suffix of the module name.
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return None


def _unsupported_features(config: dict[str, Any]) -> list[str]:
    found = []
    if config.get("modules_to_save"):
        found.append("modules_to_save (full-weight copies of base layers)")
    if config.get("use_dora"):
        found.append("DoRA (use_dora)")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        found.append("LoRA bias")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in PLAIN_INITS:
        found.append(f"init_lora_weights={init!r} (it rewrites base weights)")
    for key in ("alora_invocation_tokens", "layer_replication", "use_bdlora", "use_qalora"):
        if config.get(key):
            found.append(key)
    return found


class AdapterValidator:
    """Validates adapters for one served base model under one set of limits.

    Stateless after construction, so one instance is shared by all threads.
    """

    def __init__(self, base: BaseModelSpec, limits: AdapterLimits | None = None) -> None:
        self.base = base
        self.limits = limits or AdapterLimits()

    def inspect_listing(self, root: Path) -> None:
        """Refuse pickles, too many files, missing or oversized files in the source folder."""
        files: list[Path] = []
        for folder, dirs, names in os.walk(root):
            files.extend(Path(folder, n) for n in names)
            # os.walk lists symlinked folders as dirs but does not enter them: count them.
            files.extend(Path(folder, d) for d in dirs if Path(folder, d).is_symlink())
        pickles = sorted(f.name for f in files if f.name.lower().endswith(PICKLE_SUFFIXES))
        if pickles:
            raise UnsafeWeightsFormatError(
                f"Pickle-based files are refused (they can run code when loaded): {pickles}. "
                f"Save the adapter with safetensors ({WEIGHTS_FILE}) and remove them."
            )
        if len(files) > self.limits.max_files:
            raise AdapterTooLargeError(
                f"The adapter has {len(files)} files; at most {self.limits.max_files} allowed.",
                code="too_many_files",
            )
        if not (root / CONFIG_FILE).is_file():
            raise AdapterConfigError(
                f"{CONFIG_FILE} is missing from the adapter folder.", code="adapter_config_missing"
            )
        if not (root / WEIGHTS_FILE).is_file():
            raise InvalidWeightsError(
                f"{WEIGHTS_FILE} is missing from the adapter folder.", code="weights_missing"
            )
        self._check_sizes(root)

    def _check_sizes(self, root: Path) -> None:
        for name, limit in (
            (CONFIG_FILE, self.limits.max_config_bytes),
            (WEIGHTS_FILE, self.limits.max_weights_bytes),
        ):
            size = (root / name).stat().st_size
            if size > limit:
                raise AdapterTooLargeError(f"{name} is {size} bytes; the limit is {limit} bytes.")

    def validate(self, root: Path) -> ValidatedAdapter:
        """Check the staged adapter at ``root`` against the base model and the limits."""
        self._check_sizes(root)
        config = self._read_config(root / CONFIG_FILE)
        rank, alpha = self._check_lora_config(config)
        targeted = self._targeted_modules(config.get("target_modules"))
        tensors = read_safetensors_header(
            root / WEIGHTS_FILE, max_header_bytes=self.limits.max_header_bytes
        )
        self._check_tensors(tensors, targeted, rank, config.get("rank_pattern") or {})
        try:  # the library's own parser must agree with ours
            with safe_open(str(root / WEIGHTS_FILE), framework="numpy"):
                pass
        except (SafetensorError, OSError) as exc:
            raise InvalidWeightsError(f"{WEIGHTS_FILE} cannot be opened: {exc}") from None
        target, cited = config.get("target_modules"), config.get("base_model_name_or_path")
        return ValidatedAdapter(
            rank=rank,
            alpha=alpha,
            target_modules=(target,) if isinstance(target, str) else tuple(target or ()),
            base_model=cited if isinstance(cited, str) else None,
            size_bytes=sum((root / name).stat().st_size for name in STORED_FILES),
        )

    @staticmethod
    def _read_config(path: Path) -> dict[str, Any]:
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise AdapterConfigError(f"{CONFIG_FILE} is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise AdapterConfigError(f"{CONFIG_FILE} must hold a JSON object.")
        return config

    def _check_lora_config(self, config: dict[str, Any]) -> tuple[int, float]:
        peft_type = config.get("peft_type")
        if peft_type != "LORA":
            raise UnsupportedAdapterError(
                f"Only LoRA adapters are served; peft_type is {peft_type!r}, expected 'LORA'.",
                code="unsupported_peft_type",
                param="adapter_config.peft_type",
            )
        rank, alpha = config.get("r"), config.get("lora_alpha")
        if not _is_positive_int(rank):
            raise AdapterConfigError(
                f"r must be a positive integer, got {rank!r}.", param="adapter_config.r"
            )
        assert isinstance(rank, int)
        if not isinstance(alpha, int | float) or isinstance(alpha, bool):
            raise AdapterConfigError(
                f"lora_alpha must be a number, got {alpha!r}.", param="adapter_config.lora_alpha"
            )
        pattern = config.get("rank_pattern") or {}
        try:
            valid = isinstance(pattern, dict) and all(
                _is_positive_int(v) and re.compile(k) for k, v in pattern.items()
            )
        except re.error:
            valid = False
        if not valid:
            raise AdapterConfigError(
                "rank_pattern must map module regexes to positive integers.",
                param="adapter_config.rank_pattern",
            )
        unsupported = _unsupported_features(config)
        if unsupported:
            raise UnsupportedAdapterError(
                f"The engine cannot serve these LoRA features: {', '.join(unsupported)}.",
                code="unsupported_lora_feature",
            )
        max_rank = max([rank, *pattern.values()])
        if max_rank > self.limits.max_lora_rank:
            raise RankTooLargeError(
                f"LoRA rank {max_rank} is above the engine's max_lora_rank "
                f"{self.limits.max_lora_rank}."
            )
        cited = config.get("base_model_name_or_path")
        if not self.base.accepts_name(cited):
            raise BaseModelMismatchError(
                f"The adapter was trained on {cited!r}, but this gateway serves "
                f"{self.base.name!r} (accepted names: {sorted(self.base.accepted_names)})."
            )
        return rank, float(alpha)

    def _targeted_modules(self, target: object) -> set[str]:
        if isinstance(target, str):
            try:
                modules = self.base.modules_for_regex(target)
            except re.error as exc:
                raise AdapterConfigError(
                    f"target_modules {target!r} is not a valid regular expression: {exc}",
                    param="adapter_config.target_modules",
                ) from None
            if not modules:
                raise UnknownTargetModuleError(
                    f"target_modules {target!r} matches no module of the base model."
                )
            return set(modules)
        if not (isinstance(target, list) and target and all(isinstance(t, str) for t in target)):
            raise AdapterConfigError(
                "target_modules must be a non-empty list of module names or a regex string.",
                param="adapter_config.target_modules",
            )
        selected: set[str] = set()
        missing = []
        for name in target:
            modules = self.base.modules_for_target(name)
            if not modules:
                missing.append(name)
            selected.update(modules)
        if missing:
            raise UnknownTargetModuleError(
                f"target_modules {missing} do not exist in the base model {self.base.name!r}."
            )
        return selected

    def _check_tensors(
        self,
        tensors: dict[str, TensorInfo],
        targeted: set[str],
        rank: int,
        rank_pattern: dict[str, Any],
    ) -> None:
        if not tensors:
            raise InvalidWeightsError(f"{WEIGHTS_FILE} holds no tensors.")
        halves: dict[str, set[str]] = {}
        for key, info in sorted(tensors.items()):
            match = LORA_KEY.fullmatch(key)
            if match is None:
                raise InvalidWeightsError(
                    f"Tensor {key!r} is not a LoRA A/B weight the engine can load.",
                    code="unexpected_tensor",
                )
            module, kind = match["module"], match["kind"]
            if info.dtype not in FLOAT_DTYPES:
                raise InvalidWeightsError(
                    f"Tensor {key!r} has dtype {info.dtype}; expected {sorted(FLOAT_DTYPES)}."
                )
            if module not in self.base.weight_shapes:
                raise UnknownTargetModuleError(
                    f"Tensor {key!r} adapts {module!r}, which the base model does not have.",
                    param="adapter",
                )
            if kind.startswith("lora_embedding") != self.base.is_embedding(module):
                raise InvalidWeightsError(
                    f"Tensor {key!r}: {module!r} needs lora_embedding_A/B if it is an embedding"
                    " and lora_A/B.weight otherwise.",
                    code="unexpected_tensor",
                )
            if module not in targeted:
                raise InvalidWeightsError(
                    f"Tensor {key!r} adapts {module!r}, which target_modules does not select.",
                    code="untargeted_tensor",
                )
            expected_rank = _pattern_value(rank_pattern, module) or rank
            expected = self._expected_shape(module, kind, expected_rank)
            if info.shape != expected:
                raise TensorShapeMismatchError(
                    f"Tensor {key!r} has shape {list(info.shape)}; the base model's "
                    f"{module} (weight {list(self.base.weight_shapes[module])}) with rank "
                    f"{expected_rank} needs {list(expected)}."
                )
            halves.setdefault(module, set()).add(kind.split(".")[0][-1])
        incomplete = sorted(m for m, seen in halves.items() if seen != {"A", "B"})
        if incomplete:
            raise InvalidWeightsError(
                f"Modules {incomplete} lack their LoRA A or B tensor.", code="incomplete_lora_pair"
            )

    def _expected_shape(self, module: str, kind: str, rank: int) -> tuple[int, ...]:
        rows, cols = self.base.weight_shapes[module]
        if kind.startswith("lora_embedding"):
            # PEFT stores embedding LoRA as A: (r, num_embeddings), B: (embedding_dim, r).
            return (rank, rows) if kind.endswith("A") else (cols, rank)
        # Linear weight is (out_features, in_features): A is (r, in), B is (out, r).
        return (rank, cols) if kind == "lora_A.weight" else (rows, rank)
