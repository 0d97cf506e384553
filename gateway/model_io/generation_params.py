"""Request fields to ``GenerationParams``, with every check that must precede the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gateway.engine.interface import GenerationParams, StructuredOutput
from gateway.errors import ContextLengthError, InvalidRequestError, UnsupportedParameterError
from gateway.protocol.common import ResponseFormat, VLLMSamplingExtensions
from gateway.settings import LimitSettings

if TYPE_CHECKING:
    from gateway.tenancy.policy import BoundedSampling


@dataclass(frozen=True)
class SamplingFields:
    """The sampling fields chat and completions share, as the client sent them."""

    n: int | None
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: str | list[str] | None
    seed: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    logprobs: int | None
    response_format: ResponseFormat | None = None
    max_tokens_param: str = "max_tokens"
    extensions: VLLMSamplingExtensions | None = None
    constraint: StructuredOutput | None = None
    """A structured output the gateway sets itself (tool calls); wins over response_format."""

    @classmethod
    def of(
        cls,
        request: SamplingRequestFields,
        bounded: BoundedSampling,
        *,
        logprobs: int | None,
        response_format: ResponseFormat | None = None,
        max_tokens_param: str = "max_tokens",
        constraint: StructuredOutput | None = None,
    ) -> SamplingFields:
        """The fields of a chat or completion request, after its policy bounded them."""
        return cls(
            n=request.n,
            temperature=bounded.temperature,
            top_p=bounded.top_p,
            max_tokens=bounded.max_tokens,
            stop=request.stop,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            logprobs=logprobs,
            response_format=response_format,
            max_tokens_param=max_tokens_param,
            extensions=request if isinstance(request, VLLMSamplingExtensions) else None,
            constraint=constraint,
        )


class SamplingRequestFields(Protocol):
    """What chat and completion request bodies both carry."""

    n: int | None
    stop: str | list[str] | None
    seed: int | None
    presence_penalty: float | None
    frequency_penalty: float | None


def stop_sequences(stop: str | list[str] | None, limits: LimitSettings) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else list(stop)
    if len(stops) > limits.max_stop_sequences:
        raise InvalidRequestError(
            f"At most {limits.max_stop_sequences} stop sequences are allowed.", param="stop"
        )
    if any(s == "" for s in stops):
        raise InvalidRequestError("Stop sequences must not be empty.", param="stop")
    return tuple(stops)


def structured_output(fmt: ResponseFormat | None) -> StructuredOutput | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return StructuredOutput(kind="json_object")
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequestError(
            "response_format of type 'json_schema' needs json_schema.schema.",
            param="response_format.json_schema",
        )
    return StructuredOutput(kind="json_schema", json_schema=fmt.json_schema.schema_)


def build_generation_params(
    fields: SamplingFields,
    *,
    prompt_tokens: int,
    max_model_len: int,
    limits: LimitSettings,
    default_max_tokens: int | None = None,
    prompt_param: str = "messages",
) -> GenerationParams:
    n = fields.n or 1  # at most limits.max_n: the pipeline checks it before admission
    if prompt_tokens >= max_model_len:
        raise ContextLengthError(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"{prompt_param} resulted in {prompt_tokens} tokens.",
            param=prompt_param,
        )
    room = max_model_len - prompt_tokens
    max_tokens = fields.max_tokens or default_max_tokens or room
    if fields.max_tokens is None:
        max_tokens = min(max_tokens, room)
    if prompt_tokens + max_tokens > max_model_len:
        raise ContextLengthError(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
            f"{prompt_param}, {max_tokens} in the completion). Please reduce the length of "
            f"the {prompt_param} or completion.",
            param=fields.max_tokens_param,
        )
    return GenerationParams(
        max_tokens=max_tokens,
        n=n,
        temperature=1.0 if fields.temperature is None else fields.temperature,
        top_p=1.0 if fields.top_p is None else fields.top_p,
        stop=stop_sequences(fields.stop, limits),
        seed=fields.seed,
        presence_penalty=fields.presence_penalty or 0.0,
        frequency_penalty=fields.frequency_penalty or 0.0,
        logprobs=fields.logprobs,
        structured_output=fields.constraint or structured_output(fields.response_format),
        **_extensions(fields.extensions, max_tokens),
    )


def _extensions(ext: VLLMSamplingExtensions | None, max_tokens: int) -> dict[str, Any]:
    if ext is None:
        return {}
    if ext.min_tokens is not None and ext.min_tokens > max_tokens:
        raise InvalidRequestError("min_tokens must not exceed max_tokens.", param="min_tokens")
    return {
        "top_k": 0 if ext.top_k in (None, -1) else ext.top_k,
        "min_p": ext.min_p or 0.0,
        "repetition_penalty": ext.repetition_penalty or 1.0,
        "min_tokens": ext.min_tokens or 0,
        "ignore_eos": bool(ext.ignore_eos),
    }


def refuse_unsupported(request: object, names: tuple[str, ...]) -> None:
    """400 for any parameter of OpenAI's API that this server does not implement."""
    for name in names:
        value = getattr(request, name, None)
        if value is not None:
            raise UnsupportedParameterError(name)
