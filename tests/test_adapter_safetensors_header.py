"""The bounded safetensors header reader refuses every malformed or hostile header."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from adapters.errors import InvalidWeightsError
from adapters.safetensors_header import TensorInfo, read_safetensors_header

BOUND = 1024 * 1024
ONE_F32 = b'"dtype": "F32", "shape": [1], "data_offsets": [0, 4]'


def write(path: Path, header: bytes, *, declared: int | None = None, data: bytes = b"") -> Path:
    length = len(header) if declared is None else declared
    path.write_bytes(struct.pack("<Q", length) + header + data)
    return path


def test_reads_what_safetensors_writes(tmp_path):
    path = tmp_path / "ok.safetensors"
    tensors: dict[str, np.ndarray] = {
        "a": np.zeros((8, 128), np.float32),
        "b": np.ones((3,), np.float16),
    }
    save_file(tensors, path, metadata={"format": "pt"})
    header = read_safetensors_header(path, max_header_bytes=BOUND)
    assert header == {"a": TensorInfo("F32", (8, 128)), "b": TensorInfo("F16", (3,))}
    with safe_open(str(path), framework="numpy") as handle:
        assert sorted(handle.keys()) == sorted(header)


@pytest.mark.parametrize(
    ("header", "declared", "data", "reason"),
    [
        (b"", 0, b"", "header length 0"),
        (b"{}", 2**40, b"", "outside"),  # a huge declared length is refused before reading
        (b'{"a": 1}', 10_000, b"", "past the end"),
        (b"not json", None, b"", "not valid JSON"),
        (b"[1, 2]", None, b"", "not a JSON object"),
        (b'{"__metadata__": {"k": 1}}', None, b"", "__metadata__"),
        (b'{"x": {"dtype": "F32", "shape": [1]}}', None, b"", "exactly"),
        (b'{"x": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}', None, b"\0", "dtype"),
        (b'{"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', None, b"", "shape"),
        (b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}', None, b"", "offsets"),
        (
            b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}',
            None,
            b"\0" * 4,
            "match",
        ),
        (b'{"x": {' + ONE_F32 + b"}}", None, b"\0" * 8, "cover"),  # trailing bytes: a gap
        (b'{"x": {' + ONE_F32 + b"}}", None, b"", "cover"),  # data beyond the end of file
        (b'{"x": {' + ONE_F32 + b'}, "y": {' + ONE_F32 + b"}}", None, b"\0" * 8, "overlaps"),
        (b'{"x": {' + ONE_F32 + b'}, "x": {' + ONE_F32 + b"}}", None, b"\0" * 4, "duplicate"),
    ],
)
def test_malformed_headers(tmp_path, header, declared, data, reason):
    path = write(tmp_path / "bad.safetensors", header, declared=declared, data=data)
    with pytest.raises(InvalidWeightsError, match=reason) as caught:
        read_safetensors_header(path, max_header_bytes=BOUND)
    assert (caught.value.status_code, caught.value.code) == (422, "invalid_weights")


def test_shorter_than_the_length_field(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(InvalidWeightsError, match="shorter"):
        read_safetensors_header(path, max_header_bytes=BOUND)


def test_header_above_the_bound_is_not_read(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({f"t{i}": np.zeros((1,), np.float32) for i in range(200)}, path)
    with pytest.raises(InvalidWeightsError, match=r"outside 1\.\.256"):
        read_safetensors_header(path, max_header_bytes=256)
