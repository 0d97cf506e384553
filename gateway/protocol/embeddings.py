"""``/v1/embeddings`` request and response models (OpenAI's ``CreateEmbeddingRequest`` and
``CreateEmbeddingResponse``).

``input`` takes what OpenAI takes: a string, a list of strings, a list of token ids or a
list of token-id lists. Token ids are cl100k ids (OpenAI's tokenizer for its embedding
models: LangChain's ``OpenAIEmbeddings`` sends them by default); the gateway decodes them
to text, because its embedders read their own tokens.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Sequence
from typing import Annotated, Literal, cast

import numpy as np
from pydantic import BaseModel, BeforeValidator, Field

from gateway.protocol.common import OpenAIModel


class EncodingFormat(enum.StrEnum):
    FLOAT = "float"
    BASE64 = "base64"
    """Little-endian float32 bytes, base64-encoded (the OpenAI SDK's default)."""


def _input_shape(value: object) -> object:
    """One of OpenAI's four shapes, non-empty, never a mix; each refusal names ``input``
    alone (pydantic's union errors would name a union member as well)."""
    if isinstance(value, str):
        if not value:
            raise ValueError("the input must not be an empty string")
        return value
    if not isinstance(value, list) or not value:
        raise ValueError(
            "expected a non-empty string, list of strings, list of token ids or list of "
            "token-id lists"
        )
    if all(isinstance(item, str) for item in value):
        if not all(value):
            raise ValueError("no input may be an empty string")
        return value
    if all(_is_id(item) for item in value):
        return value
    if all(isinstance(item, list) for item in value):
        if not all(item and all(_is_id(i) for i in item) for item in value):
            raise ValueError("each token-id list must be a non-empty list of integers")
        return value
    raise ValueError("all inputs must be of one kind: strings, token ids or token-id lists")


def _is_id(item: object) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


EmbeddingInput = Annotated[
    str | list[str] | list[int] | list[list[int]], BeforeValidator(_input_shape)
]


class CreateEmbeddingRequest(OpenAIModel):
    model: str = Field(
        description="An embedding model id from /v1/models (its owned_by and "
        "root say which embedder it is), or a tenant alias of one."
    )
    input: EmbeddingInput = Field(
        description="Text to embed: a string, a list of strings, a list of token ids or a list "
        "of token-id lists. Token ids are OpenAI's cl100k_base ids (what LangChain's "
        "OpenAIEmbeddings sends by default); they are decoded to text, since the embedders "
        "read their own tokens, so an id outside cl100k's ordinary tokens (0..100255) is "
        "refused. Bounds: limits.max_embedding_inputs inputs, each non-empty and at most "
        "limits.max_embedding_input_tokens of the embedder's own tokens (never more than it "
        "reads: 254 word-pieces for all-MiniLM-L6-v2); longer inputs are refused, not cut."
    )
    encoding_format: EncodingFormat = Field(
        default=EncodingFormat.FLOAT,
        description="float (JSON numbers) or base64 (little-endian float32 bytes).",
    )
    dimensions: int | None = Field(
        default=None,
        ge=1,
        description="Size of the vectors: the model's native size, or one of the sizes it was "
        "trained to be cut to (retrieval.embedder_dimensions; none for the bundled embedders). "
        "A cut vector is normalised again.",
    )
    user: str | None = Field(default=None, description="Accepted; not used.")

    def texts_or_ids(self) -> list[str] | list[list[int]]:
        """The inputs as a list: strings, or one token-id list per input."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if all(isinstance(item, int) for item in value):
            return [cast(list[int], value)]  # one input of token ids
        return cast(list[str] | list[list[int]], value)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 when asked for.")


class EmbeddingUsage(BaseModel):
    """OpenAI's ``CreateEmbeddingResponse.usage``: the inputs' tokens, in the embedder's own
    tokens (cl100k for an embedder without a tokenizer)."""

    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage

    @classmethod
    def build(
        cls, model: str, vectors: np.ndarray, encoding: EncodingFormat, prompt_tokens: int
    ) -> CreateEmbeddingResponse:
        rows: Sequence[list[float] | str]
        if encoding is EncodingFormat.BASE64:
            raw = np.ascontiguousarray(vectors, dtype="<f4")
            rows = [base64.b64encode(row.tobytes()).decode("ascii") for row in raw]
        else:
            rows = vectors.astype(np.float32).tolist()
        return cls(
            data=[Embedding(index=i, embedding=row) for i, row in enumerate(rows)],
            model=model,
            usage=EmbeddingUsage(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
        )
