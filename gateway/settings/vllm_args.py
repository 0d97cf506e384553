"""``engine.extra_args``: any vLLM engine argument, checked against vLLM's own definitions.

vLLM defines its engine arguments as the fields of the ``EngineArgs`` dataclass
(``AsyncEngineArgs`` is what an ``AsyncLLM`` takes); ``vllm serve --tensor-parallel-size
2`` is ``tensor_parallel_size: 2`` here (dashes are accepted too). Names are checked
against those fields and values against their annotated types when the settings are
validated, so a typo fails in ``loragate config check`` instead of minutes into the
engine's start-up. Nested config arguments (``compilation_config: {...}``) are validated
by the same pydantic ``TypeAdapter`` vLLM's own command line uses.

vLLM is imported only when there is something to check. Where it cannot be imported
(a machine that only edits configs), names and types go unchecked, with a warning, and
the engine checks them when it starts; the arguments loragate sets itself are refused
either way.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import logging
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

logger = logging.getLogger(__name__)

RESERVED: dict[str, str] = {
    "model": "model.path (loragate serve --model)",
    "served_model_name": "model.name (loragate serve --served-model-name)",
    "tokenizer": "model.path: the gateway tokenizes prompts with the model folder's tokenizer",
    "skip_tokenizer_init": "nothing: the engine receives token ids and detokenizes them",
    "dtype": "engine.dtype (loragate serve --dtype)",
    "max_model_len": "engine.max_model_len (loragate serve --max-model-len)",
    "enable_lora": "nothing: LoRA is always on",
    "max_loras": "engine.max_loras (loragate serve --max-loras)",
    "max_cpu_loras": "engine.max_cpu_loras (loragate serve --max-cpu-loras)",
    "max_lora_rank": "engine.max_lora_rank (loragate serve --max-lora-rank)",
    "gpu_memory_utilization": "engine.memory_fraction (loragate serve --gpu-memory-utilization)",
    "kv_cache_memory_bytes": "engine.kv_cache_gib",
    "max_num_seqs": "engine.max_num_seqs (loragate serve --max-num-seqs)",
    "enforce_eager": "engine.enforce_eager (loragate serve --enforce-eager)",
    "seed": "engine.seed (loragate serve --seed)",
    "disable_log_stats": "nothing: the gateway's metrics and vLLM's vllm:* series need them",
    "worker_extension_cls": "nothing: loragate's LoRA slot query uses it",
    "structured_outputs_config": "engine.compact_json (loragate picks the xgrammar backend)",
}
"""Engine arguments loragate sets itself -> the setting to use instead."""

NOT_ENGINE_ARGS: dict[str, str] = {
    "chat_template": "the gateway renders chat prompts itself, with the chat template of "
    "the model folder (tokenizer_config.json or chat_template.jinja in model.path)",
    "lora_modules": "list adapters under adapters: (loragate serve --lora NAME=PATH)",
    "host": "use server.host (loragate serve --host)",
    "port": "use server.port (loragate serve --port)",
    "api_key": "use tenants and admin keys (loragate keys create)",
}
"""``vllm serve`` flags that are no engine arguments -> what loragate does instead."""


class _Unchecked:
    """A field type this module cannot check (vLLM resolves it when the engine starts)."""


UNCHECKED: Any = _Unchecked()


@functools.cache
def vllm_argument_types() -> dict[str, Any] | None:
    """Each ``AsyncEngineArgs`` field -> its type; ``None`` when vLLM cannot be imported."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except Exception as exc:  # noqa: BLE001 (ImportError, or a broken install failing on import)
        logger.warning(
            "engine.extra_args not checked: vLLM cannot be imported here (%s: %s); "
            "the engine checks them when it starts",
            type(exc).__name__,
            exc,
        )
        return None
    return argument_types(AsyncEngineArgs)


def argument_types(cls: type) -> dict[str, Any]:
    """The public fields of dataclass ``cls`` and their types, resolved in the module
    that declares the class (``UNCHECKED`` where an annotation does not resolve there,
    e.g. a name vLLM imports for type checkers only)."""
    namespace = vars(sys.modules[cls.__module__])
    result = {}
    for field in dataclasses.fields(cls):
        if not field.name.startswith("_"):
            result[field.name] = _resolve(field.type, namespace)
    return result


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    if not isinstance(annotation, str):
        return annotation

    def probe() -> None: ...

    probe.__annotations__ = {"value": annotation}
    try:
        return typing.get_type_hints(probe, globalns=namespace)["value"]
    except (NameError, AttributeError, TypeError, SyntaxError):  # an annotation not resolvable here
        return UNCHECKED


def check_extra_args(
    args: Mapping[str, Any],
    types_source: Callable[[], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """``args`` with names normalised (``-`` -> ``_``), or ``ValueError`` listing every
    unknown, reserved or ill-typed argument. Values are never quoted (one may be a
    secret, e.g. ``hf_token``)."""
    normalised: dict[str, Any] = {}
    problems: list[str] = []
    for raw, value in args.items():
        name = str(raw).replace("-", "_")
        if name in normalised:
            problems.append(f"{name}: given twice")
        normalised[name] = value
    known = (types_source or vllm_argument_types)()
    for name, value in normalised.items():
        problem = _problem(name, value, known)
        if problem is not None:
            problems.append(f"{name}: {problem}")
    if problems:
        raise ValueError("; ".join(problems))
    return normalised


def engine_arg_values(
    args: Mapping[str, Any], types_source: Callable[[], dict[str, Any] | None] | None = None
) -> dict[str, Any]:
    """The checked arguments as ``AsyncEngineArgs`` keywords: nested config arguments
    become their vLLM config objects, as vLLM's command line makes them."""
    if not args:
        return {}
    known = (types_source or vllm_argument_types)()
    values = {}
    for name, value in check_extra_args(args, lambda: known).items():
        config_class = _config_class((known or {}).get(name, UNCHECKED))
        if config_class is not None and isinstance(value, dict):
            from pydantic import TypeAdapter

            value = TypeAdapter(config_class).validate_python(value)
        values[name] = value
    return values


def _problem(name: str, value: Any, known: dict[str, Any] | None) -> str | None:
    if name in RESERVED:
        return f"set by loragate; use {RESERVED[name]}"
    if name in NOT_ENGINE_ARGS:
        return f"not a vLLM engine argument; {NOT_ENGINE_ARGS[name]}"
    if known is None:
        return None
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"not a vLLM engine argument{hint}"
    return _type_problem(value, known[name])


def _type_problem(value: Any, annotation: Any) -> str | None:
    config_class = _config_class(annotation)
    if config_class is not None and isinstance(value, dict):
        from pydantic import TypeAdapter, ValidationError

        try:
            TypeAdapter(config_class).validate_python(value)
        except ValidationError as exc:
            return "; ".join(_pydantic_error(e) for e in exc.errors())
        return None
    if _conforms(value, annotation):
        return None
    return f"expects {_describe(annotation)}, got {_kind(value)}"


def _pydantic_error(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _config_class(annotation: Any) -> type | None:
    """The vLLM config dataclass a field takes (``CompilationConfig``, ...), if any."""
    candidates = get_args(annotation) if _is_union(annotation) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _conforms(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits ``annotation``; types this cannot judge pass."""
    origin, params = get_origin(annotation), get_args(annotation)
    if annotation is UNCHECKED or annotation is Any or annotation is object:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin is Literal:
        return any(value == p and type(value) is type(p) for p in params)
    if _is_union(annotation):
        return any(_conforms(value, p) for p in params)
    if annotation in (bool, int, float, str):
        return _SCALARS[annotation](value)
    return _conforms_structure(value, annotation, origin, params)


_SCALARS: dict[Any, Callable[[Any], bool]] = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
}


def _conforms_structure(value: Any, annotation: Any, origin: Any, params: tuple[Any, ...]) -> bool:
    """``_conforms`` for containers, enums, dataclasses and what cannot be judged."""
    if annotation in (list, set, frozenset, tuple) or origin in (list, set, frozenset, tuple):
        items = params[0] if params and (origin is not tuple or params[-1] is ...) else Any
        return isinstance(value, list) and all(_conforms(v, items) for v in value)
    if annotation is dict or origin is dict:
        key, item = params if len(params) == 2 else (Any, Any)
        return isinstance(value, dict) and all(
            _conforms(k, key) and _conforms(v, item) for k, v in value.items()
        )
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        # vLLM's command line passes the member's name as a string.
        return isinstance(value, str) and (
            value in annotation.__members__ or value in {str(m.value) for m in annotation}
        )
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return isinstance(value, dict)
    return True  # type[...], callables, torch.dtype...: vLLM takes their names as strings


def _describe(annotation: Any) -> str:
    origin, params = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(p) for p in params)
    if _is_union(annotation):
        return " or ".join(_describe(p) for p in params)
    if annotation is None or annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(annotation.__members__)
    if isinstance(annotation, type) and not params:
        names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false"}
        return names.get(annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _kind(value: Any) -> str:
    """A value's YAML kind, never the value itself."""
    if value is None:
        return "null"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)
