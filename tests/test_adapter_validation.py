"""Every refused adapter: its typed error (status, code, param) and an untouched store."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from adapters.base_model import BaseMatch, BaseModelSpec
from adapters.errors import (
    AdapterConfigError,
    AdapterError,
    AdapterTooLargeError,
    BaseModelMismatchError,
    InvalidAdapterNameError,
    InvalidWeightsError,
    RankTooLargeError,
    TensorShapeMismatchError,
    UnknownTargetModuleError,
    UnsafeWeightsFormatError,
    UnsupportedAdapterError,
)
from adapters.limits import AdapterLimits
from adapters.registry import AdapterRegistry
from adapters.sources import LocalDirectorySource
from adapters.validation import CONFIG_FILE, WEIGHTS_FILE
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

LIMITS = AdapterLimits(max_lora_rank=16, max_weights_bytes=4 * 1024 * 1024, max_files=8)
Q_PROJ = "base_model.model.model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def base_dir() -> Path:
    return tiny_llama_dir()


@pytest.fixture
def registry(tmp_path: Path, base_dir: Path) -> Iterator[AdapterRegistry]:
    base = BaseModelSpec.from_directory(base_dir, name="tiny-base")
    with AdapterRegistry.open(tmp_path / "data", base, LIMITS) as reg:
        yield reg


@pytest.fixture
def make_adapter(tmp_path: Path, base_dir: Path) -> Callable[..., Path]:
    """A valid rank-8 q/k/v/o adapter folder under tmp_path/incoming, to be spoiled."""

    def make(name: str = "a", **kwargs: Any) -> Path:
        kwargs.setdefault("seed", 1)
        return write_random_adapter(base_dir, tmp_path / "incoming" / name, **kwargs)

    return make


def edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    config.update(changes)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def write_tensors(folder: Path, tensors: dict[str, tuple[int, ...]]) -> None:
    save_file({k: np.zeros(s, dtype=np.float32) for k, s in tensors.items()}, folder / WEIGHTS_FILE)


def register(registry: AdapterRegistry, folder: Path, name: str = "probe") -> Any:
    return registry.register(name, LocalDirectorySource(folder, [folder.parent]))


def assert_store_empty(registry: AdapterRegistry) -> None:
    data = registry.data_dir
    assert list((data / "adapters").rglob("*")) == []
    assert list((data / "staging").iterdir()) == []
    assert registry.entries() == []


def assert_refused(
    registry: AdapterRegistry,
    folder: Path,
    error: type[AdapterError],
    status: int,
    code: str,
    param: str,
) -> AdapterError:
    with pytest.raises(error) as caught:
        register(registry, folder)
    exc = caught.value
    assert (exc.status_code, exc.code, exc.param) == (status, code, param), exc.message
    assert exc.to_openai()["type"] == "invalid_request_error"
    assert_store_empty(registry)
    return exc


def test_valid_adapter_is_stored_with_its_metadata(registry, make_adapter):
    folder = make_adapter(rank=8, alpha=16)
    (folder / "README.md").write_text("extra files are not copied")
    entry = register(registry, folder)
    assert (entry.rank, entry.alpha, entry.lora_int_id) == (8, 16.0, 1)
    assert entry.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert sorted(p.name for p in entry.path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert (entry.path / WEIGHTS_FILE).read_bytes() == (folder / WEIGHTS_FILE).read_bytes()
    assert entry.path.parent.parent == registry.data_dir / "adapters"


def test_adapter_saved_by_peft_itself_is_accepted(registry, base_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    get_peft_model(model, config).save_pretrained(str(tmp_path / "incoming" / "peft"))
    entry = register(registry, tmp_path / "incoming" / "peft")
    assert (entry.rank, entry.alpha) == (4, 8.0)
    assert set(entry.target_modules) == {"q_proj", "v_proj", "down_proj"}


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"])
def test_pickle_files_are_refused_even_beside_safetensors(registry, make_adapter, suffix):
    folder = make_adapter()
    (folder / f"adapter_model{suffix}").write_bytes(b"\x80\x04pickle")
    exc = assert_refused(
        registry, folder, UnsafeWeightsFormatError, 422, "unsafe_weights_format", "adapter"
    )
    assert suffix in exc.message


def test_pickle_only_adapter_is_refused(registry, make_adapter):
    folder = make_adapter()
    (folder / WEIGHTS_FILE).rename(folder / "nested.BIN")
    assert_refused(
        registry, folder, UnsafeWeightsFormatError, 422, "unsafe_weights_format", "adapter"
    )


def test_missing_config(registry, make_adapter):
    folder = make_adapter()
    (folder / CONFIG_FILE).unlink()
    assert_refused(
        registry, folder, AdapterConfigError, 422, "adapter_config_missing", "adapter_config"
    )


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", "\xff\xfe"])
def test_unparsable_config(registry, make_adapter, body):
    folder = make_adapter()
    (folder / CONFIG_FILE).write_text(body, encoding="latin-1")
    assert_refused(
        registry, folder, AdapterConfigError, 422, "invalid_adapter_config", "adapter_config"
    )


def test_missing_weights(registry, make_adapter):
    folder = make_adapter()
    (folder / WEIGHTS_FILE).unlink()
    assert_refused(registry, folder, InvalidWeightsError, 422, "weights_missing", "adapter")


def test_peft_type_must_be_lora(registry, make_adapter):
    folder = make_adapter()
    edit_config(folder, peft_type="IA3")
    assert_refused(
        registry,
        folder,
        UnsupportedAdapterError,
        422,
        "unsupported_peft_type",
        "adapter_config.peft_type",
    )


@pytest.mark.parametrize(
    "feature",
    [
        {"use_dora": True},
        {"bias": "all"},
        {"modules_to_save": ["lm_head"]},
        {"init_lora_weights": "pissa"},
    ],
)
def test_lora_features_the_engine_cannot_serve(registry, make_adapter, feature):
    folder = make_adapter()
    edit_config(folder, **feature)
    assert_refused(
        registry, folder, UnsupportedAdapterError, 422, "unsupported_lora_feature", "adapter_config"
    )


@pytest.mark.parametrize("cited", ["meta-llama/Llama-3.1-8B", None, "/elsewhere/model"])
def test_base_model_mismatch(registry, make_adapter, cited):
    folder = make_adapter()
    edit_config(folder, base_model_name_or_path=cited)
    assert_refused(
        registry,
        folder,
        BaseModelMismatchError,
        422,
        "base_model_mismatch",
        "adapter_config.base_model_name_or_path",
    )


def test_base_model_alias_and_shape_mode_accept_other_names(tmp_path, base_dir, make_adapter):
    folder = make_adapter()
    edit_config(folder, base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct")
    alias = BaseModelSpec.from_directory(base_dir, aliases=["HuggingFaceTB/SmolLM2-135M-Instruct"])
    with AdapterRegistry.open(tmp_path / "d1", alias, LIMITS) as reg:
        assert register(reg, folder).base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    shapes = BaseModelSpec.from_directory(base_dir, match=BaseMatch.SHAPES)
    with AdapterRegistry.open(tmp_path / "d2", shapes, LIMITS) as reg:
        assert register(reg, folder).rank == 8


def test_rank_above_max_lora_rank(registry, make_adapter):
    folder = make_adapter(rank=32)
    exc = assert_refused(
        registry, folder, RankTooLargeError, 422, "lora_rank_too_large", "adapter_config.r"
    )
    assert "32" in exc.message and "16" in exc.message


def test_rank_pattern_above_max_lora_rank(registry, make_adapter):
    folder = make_adapter(rank=8)
    edit_config(folder, rank_pattern={"q_proj": 64})
    assert_refused(
        registry, folder, RankTooLargeError, 422, "lora_rank_too_large", "adapter_config.r"
    )


@pytest.mark.parametrize("rank", [0, -1, "8", None, True])
def test_invalid_rank_value(registry, make_adapter, rank):
    folder = make_adapter()
    edit_config(folder, r=rank)
    assert_refused(
        registry, folder, AdapterConfigError, 422, "invalid_adapter_config", "adapter_config.r"
    )


@pytest.mark.parametrize(
    ("key", "param"),
    [
        ("r", "adapter_config.r"),
        ("lora_alpha", "adapter_config.lora_alpha"),
        ("target_modules", "adapter_config.target_modules"),
    ],
)
def test_required_config_keys(registry, make_adapter, key, param):
    folder = make_adapter()
    config = json.loads((folder / CONFIG_FILE).read_text())
    del config[key]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    assert_refused(registry, folder, AdapterConfigError, 422, "invalid_adapter_config", param)


@pytest.mark.parametrize("targets", [["q_proj", "w_pack"], "model\\.nothing\\..*"])
def test_target_module_missing_from_base(registry, make_adapter, targets):
    folder = make_adapter()
    edit_config(folder, target_modules=targets)
    assert_refused(
        registry,
        folder,
        UnknownTargetModuleError,
        422,
        "unknown_target_module",
        "adapter_config.target_modules",
    )


def test_regex_target_modules_are_accepted(registry, make_adapter):
    folder = make_adapter()
    edit_config(folder, target_modules=r".*\.self_attn\.(q|k|v|o)_proj")
    assert register(registry, folder).target_modules == (r".*\.self_attn\.(q|k|v|o)_proj",)


def test_tensor_for_a_layer_the_base_lacks(registry, make_adapter):
    folder = make_adapter(target_modules=("q_proj",))
    prefix = "base_model.model.model.layers.7.self_attn.q_proj"
    write_tensors(
        folder, {f"{prefix}.lora_A.weight": (8, 128), f"{prefix}.lora_B.weight": (128, 8)}
    )
    assert_refused(
        registry, folder, UnknownTargetModuleError, 422, "unknown_target_module", "adapter"
    )


@pytest.mark.parametrize(
    ("a_shape", "b_shape"),
    [((8, 256), (128, 8)), ((8, 128), (256, 8)), ((4, 128), (128, 4)), ((8, 128, 1), (128, 8))],
)
def test_tensor_shape_must_fit_the_base(registry, make_adapter, a_shape, b_shape):
    folder = make_adapter(target_modules=("q_proj",))
    write_tensors(folder, {f"{Q_PROJ}.lora_A.weight": a_shape, f"{Q_PROJ}.lora_B.weight": b_shape})
    exc = assert_refused(
        registry, folder, TensorShapeMismatchError, 422, "tensor_shape_mismatch", "adapter"
    )
    assert "q_proj" in exc.message


def test_tensor_outside_target_modules(registry, make_adapter):
    folder = make_adapter(target_modules=("k_proj",))
    write_tensors(
        folder, {f"{Q_PROJ}.lora_A.weight": (8, 128), f"{Q_PROJ}.lora_B.weight": (128, 8)}
    )
    assert_refused(registry, folder, InvalidWeightsError, 422, "untargeted_tensor", "adapter")


def test_unexpected_tensor_name(registry, make_adapter):
    folder = make_adapter(target_modules=("q_proj",))
    write_tensors(folder, {f"{Q_PROJ}.weight": (128, 128)})
    assert_refused(registry, folder, InvalidWeightsError, 422, "unexpected_tensor", "adapter")


def test_lora_pair_must_be_complete(registry, make_adapter):
    folder = make_adapter(target_modules=("q_proj",))
    write_tensors(folder, {f"{Q_PROJ}.lora_A.weight": (8, 128)})
    assert_refused(registry, folder, InvalidWeightsError, 422, "incomplete_lora_pair", "adapter")


def test_weights_above_size_limit(registry, make_adapter):
    folder = make_adapter(target_modules=("q_proj",))
    write_tensors(folder, {f"{Q_PROJ}.lora_A.weight": (8, 128), "pad": (1100, 1000)})
    assert_refused(registry, folder, AdapterTooLargeError, 422, "adapter_too_large", "adapter")


def test_too_many_files(registry, make_adapter):
    folder = make_adapter()
    for i in range(LIMITS.max_files):
        (folder / f"notes-{i}.txt").write_text("x")
    assert_refused(registry, folder, AdapterTooLargeError, 422, "too_many_files", "adapter")


def test_malformed_safetensors_header(registry, make_adapter):
    folder = make_adapter()
    (folder / WEIGHTS_FILE).write_bytes(struct.pack("<Q", 8) + b"not json")
    assert_refused(registry, folder, InvalidWeightsError, 422, "invalid_weights", "adapter")


def test_header_bound_is_the_configured_limit(tmp_path, base_dir, make_adapter):
    folder = make_adapter()
    base = BaseModelSpec.from_directory(base_dir)
    small = AdapterLimits(max_lora_rank=16, max_header_bytes=64)
    with AdapterRegistry.open(tmp_path / "d", base, small) as reg:
        with pytest.raises(InvalidWeightsError, match="header length"):
            register(reg, folder)
        assert_store_empty(reg)


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", ".hidden", "Upper", "x" * 65, "a@b", ""])
def test_invalid_adapter_names(registry, make_adapter, name):
    folder = make_adapter()
    with pytest.raises(InvalidAdapterNameError) as caught:
        register(registry, folder, name=name)
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (
        400,
        "invalid_adapter_name",
        "name",
    )
    assert_store_empty(registry)


@pytest.mark.parametrize("version", ["../v1", "v1/../..", "..", "V1", "-v1"])
def test_invalid_versions(registry, make_adapter, version):
    folder = make_adapter()
    with pytest.raises(InvalidAdapterNameError) as caught:
        registry.register("ok", LocalDirectorySource(folder, [folder.parent]), version=version)
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (
        400,
        "invalid_adapter_version",
        "version",
    )
    assert_store_empty(registry)


def test_refusals_consume_no_id_or_version(registry, make_adapter):
    bad = make_adapter("bad", rank=32)
    with pytest.raises(RankTooLargeError):
        register(registry, bad, name="tone")
    entry = register(registry, make_adapter("good"), name="tone")
    assert (entry.version, entry.lora_int_id) == ("v1", 1)
