"""A bounded, pure-Python reader of an untrusted safetensors header.

A safetensors file is ``u64 little-endian header length`` + ``JSON header`` + data.
The length is checked against a limit and the file size before any byte of the header
is read, and every tensor's offsets are checked against its dtype, shape and the data
section, so a hostile file can neither make us allocate gigabytes nor point outside
itself. Nothing here loads tensor data.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.errors import InvalidWeightsError

DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header describes it."""

    dtype: str
    shape: tuple[int, ...]


def _invalid(path: Path, reason: str) -> InvalidWeightsError:
    return InvalidWeightsError(f"{path.name} is not a valid safetensors file: {reason}.")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate keys in header")
    return dict(pairs)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_safetensors_header(path: Path, *, max_header_bytes: int) -> dict[str, TensorInfo]:
    """Return ``{tensor name: TensorInfo}`` from ``path``; raise ``InvalidWeightsError``."""
    raw, data_len = _read_raw_header(path, max_header_bytes)
    header = _parse_header(path, raw)
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        tensors[name], offsets = _tensor_entry(path, name, entry)
        spans.append((offsets[0], offsets[1], name))
    _check_spans(path, spans, data_len)
    return tensors


def _read_raw_header(path: Path, max_header_bytes: int) -> tuple[bytes, int]:
    """The header's bytes and the data section's length, after the size checks."""
    with path.open("rb") as fh:
        file_size = fh.seek(0, 2)
        fh.seek(0)
        if file_size < 8:
            raise _invalid(path, "shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len == 0 or header_len > max_header_bytes:
            raise _invalid(path, f"header length {header_len} outside 1..{max_header_bytes}")
        if 8 + header_len > file_size:
            raise _invalid(path, f"header length {header_len} runs past the end of the file")
        return fh.read(header_len), file_size - 8 - header_len


def _parse_header(path: Path, raw: bytes) -> dict[str, Any]:
    """The header's JSON object without ``__metadata__`` (checked: strings to strings)."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _invalid(path, f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _invalid(path, "header is not a JSON object")
    metadata = header.pop(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _invalid(path, "__metadata__ must map strings to strings")
    return header


def _tensor_entry(path: Path, name: str, entry: object) -> tuple[TensorInfo, list[int]]:
    """One tensor's dtype and shape, and its data offsets, each checked."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _invalid(path, f"entry {name!r} needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise _invalid(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _invalid(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _invalid(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
        raise _invalid(path, f"tensor {name!r}: data_offsets do not match dtype and shape")
    return TensorInfo(dtype=dtype, shape=tuple(shape)), offsets


def _check_spans(path: Path, spans: list[tuple[int, int, str]], data_len: int) -> None:
    """The tensors tile the data section: no overlap, no gap, nothing past its end."""
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise _invalid(path, f"tensor {name!r} overlaps another or leaves a gap")
        position = end
    if position != data_len:
        raise _invalid(path, f"data section is {data_len} bytes but tensors cover {position}")
