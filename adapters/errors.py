"""Typed errors of the adapter registry; each knows its HTTP status and OpenAI fields.

Every error carries ``status_code``, an OpenAI ``type``, a stable ``code`` and the
``param`` it is about, so the gateway renders all of them with one handler on
``AdapterError`` (``error.to_openai()`` gives the ``{message, type, param, code}`` body).
Messages are written for the operator who registers the adapter: they say what is
wrong and what was expected.

Hierarchy::

    AdapterError                          base class, never raised itself
    ├── AdapterRequestError               400: the registration request is unusable
    │   ├── InvalidAdapterNameError       name or version breaks the naming rule
    │   ├── SourceNotAllowedError         path outside the allowed roots, bad protocol,
    │   │                                 host on a loopback/private/internal address
    │   ├── InvalidSourceUriError         a URI fsspec would misread (chained ``a::b``)
    │   ├── SourceUnavailableError        the source cannot be read (missing, I/O)
    │   ├── UnsafeArchiveError            archive member escapes, links, bombs, sizes
    │   └── InvalidSplitError             a traffic split's weights or versions are unusable
    ├── AdapterValidationError            422: the adapter's files are not servable
    │   ├── UnsafeWeightsFormatError      pickle-based weights (.bin, .pt, .pkl, ...)
    │   ├── AdapterConfigError            adapter_config.json missing / unparsable / bad
    │   ├── UnsupportedAdapterError       not LoRA, or a LoRA feature vLLM cannot serve
    │   ├── BaseModelMismatchError        trained on another base model
    │   ├── RankTooLargeError             rank above the engine's max_lora_rank
    │   ├── UnknownTargetModuleError      a target module the base model lacks
    │   ├── InvalidWeightsError           weights file unreadable or not safetensors
    │   ├── TensorShapeMismatchError      a tensor does not fit the base model
    │   └── AdapterTooLargeError          a file above the configured size limit
    ├── AdapterNotFoundError              404: no such adapter or version
    ├── AdapterConflictError              409: the registry's state forbids the action
    └── RegistryError                     500: the registry itself is broken
        ├── RegistryCorruptError          the registry file cannot be trusted
        ├── RegistryLockedError           another process holds the data folder
        └── BaseModelSpecError            the served base model cannot be described
"""

from __future__ import annotations

from typing import ClassVar


class AdapterError(Exception):
    """Base class: an adapter failure with an HTTP status and OpenAI error fields."""

    status_code: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "adapter_error"
    default_param: ClassVar[str | None] = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param if param is not None else self.default_param

    def to_openai(self) -> dict[str, str | None]:
        """The ``error`` object of an OpenAI error response."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}


class AdapterRequestError(AdapterError):
    """The registration request itself is unusable (bad name, source, archive)."""

    status_code = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class InvalidAdapterNameError(AdapterRequestError):
    """A name or version that breaks the naming rule (also blocks path traversal)."""

    default_code = "invalid_adapter_name"
    default_param = "name"


class SourceNotAllowedError(AdapterRequestError):
    """A source outside what the operator allowed (roots, protocols)."""

    default_code = "source_not_allowed"
    default_param = "source"


class InvalidSourceUriError(AdapterRequestError):
    """A URI that is not one plain location, e.g. an fsspec chain (``https://a::file:///b``)
    whose inner URL would escape the protocol and root checks."""

    default_code = "invalid_source_uri"
    default_param = "source"


class SourceUnavailableError(AdapterRequestError):
    """The source exists in principle but cannot be read."""

    default_code = "source_unavailable"
    default_param = "source"


class InvalidSplitError(AdapterRequestError):
    """A traffic split that cannot be served: bad weights, or a version that does not
    exist or is not servable."""

    default_code = "invalid_split"
    default_param = "weights"


class UnsafeArchiveError(AdapterRequestError):
    """An uploaded or fetched archive that would be unsafe or too big to unpack."""

    default_code = "unsafe_archive"
    default_param = "file"


class AdapterValidationError(AdapterError):
    """The adapter's files were read but cannot be served on this base model."""

    status_code = 422
    type = "invalid_request_error"
    default_code = "invalid_adapter"
    default_param = "adapter"


class UnsafeWeightsFormatError(AdapterValidationError):
    """Pickle-based weights: refused outright, even beside a safetensors file."""

    default_code = "unsafe_weights_format"


class AdapterConfigError(AdapterValidationError):
    """adapter_config.json is missing, unparsable, or has invalid values."""

    default_code = "invalid_adapter_config"
    default_param = "adapter_config"


class UnsupportedAdapterError(AdapterValidationError):
    """Not a LoRA adapter, or a LoRA feature the engine cannot serve (DoRA, bias...)."""

    default_code = "unsupported_adapter"
    default_param = "adapter_config"


class BaseModelMismatchError(AdapterValidationError):
    """The adapter was trained on another base model than the one served."""

    default_code = "base_model_mismatch"
    default_param = "adapter_config.base_model_name_or_path"


class RankTooLargeError(AdapterValidationError):
    """A LoRA rank above the engine's ``max_lora_rank``."""

    default_code = "lora_rank_too_large"
    default_param = "adapter_config.r"


class UnknownTargetModuleError(AdapterValidationError):
    """A target module that does not exist in the base model."""

    default_code = "unknown_target_module"
    default_param = "adapter_config.target_modules"


class InvalidWeightsError(AdapterValidationError):
    """The weights file is missing, not valid safetensors, or has unexpected tensors."""

    default_code = "invalid_weights"
    default_param = "adapter"


class TensorShapeMismatchError(AdapterValidationError):
    """A tensor whose shape does not fit the base model's layer."""

    default_code = "tensor_shape_mismatch"
    default_param = "adapter"


class AdapterTooLargeError(AdapterValidationError):
    """A file, or the adapter as a whole, above the configured size limit."""

    default_code = "adapter_too_large"
    default_param = "adapter"


class AdapterNotFoundError(AdapterError):
    """No adapter (or no such version, or no active version) under that name."""

    status_code = 404
    type = "invalid_request_error"
    default_code = "model_not_found"
    default_param = "model"


class AdapterConflictError(AdapterError):
    """The registry's current state forbids the action (exists, pinned, retiring)."""

    status_code = 409
    type = "invalid_request_error"
    default_code = "adapter_conflict"
    default_param = "name"


class RegistryError(AdapterError):
    """The registry itself is broken; an operator has to look at the data folder."""

    default_code = "registry_error"


class RegistryCorruptError(RegistryError):
    """The registry file cannot be parsed or breaks its invariants; it is left as is."""

    default_code = "registry_corrupt"


class RegistryLockedError(RegistryError):
    """Another registry object or process already owns the data folder."""

    default_code = "registry_locked"


class BaseModelSpecError(RegistryError):
    """The served base model's folder cannot be read (no config, no safetensors)."""

    default_code = "base_model_unreadable"
