"""Content hashes of model folders: the exact weights an adapter was trained on.

``adapters.base_model.BaseModelSpec.fingerprint`` digests architecture and shapes (what
an adapter must fit); ``model_content_hash`` digests the bytes (which weights exactly).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20
# Files that decide what the weights compute. The tokenizer is left out on purpose:
# re-saving it (new transformers version, new key order) does not change the model.
FINGERPRINT_PATTERNS = ("config.json", "*.safetensors", "*.bin")


def model_content_hash(model_dir: Path | str) -> str:
    """``"sha256:<hex>"`` over the names and bytes of ``config.json`` and the weight files."""
    model_dir = Path(model_dir)
    files = sorted({p for pattern in FINGERPRINT_PATTERNS for p in model_dir.glob(pattern)})
    files = [p for p in files if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{model_dir} has no config.json or weight files")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        digest.update(file_sha256(path).encode() + b"\0")
    return f"sha256:{digest.hexdigest()}"


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
