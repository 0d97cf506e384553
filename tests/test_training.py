"""LoRA training on the tiny random Llama (fast): determinism, files, metadata, atomicity."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapters.common.atomic_dir import atomic_directory
from adapters.tooling.content_hash import model_content_hash
from adapters.tooling.dataset import DatasetError
from adapters.tooling.training import (
    METADATA_FILE,
    TrainingError,
    TrainingResult,
    eval_count,
    train_lora,
)
from tests.support.modelkit import tiny_llama_dir
from tests.support.training_data import GOOD, chat_line

pytestmark = pytest.mark.integration  # trains LoRAs with torch and peft

ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", METADATA_FILE}
QA = [
    ("What is the capital of France?", "Arr, matey! Paris, me hearty!"),
    ("How many days are in a week?", "Arr, matey! Seven days, me hearty!"),
    ("What is 2 plus 2?", "Arr, matey! Four, me hearty!"),
    ("Why is the sky blue?", "Arr, matey! The air scatters blue light most, me hearty!"),
    ("Who wrote Hamlet?", "Arr, matey! William Shakespeare, me hearty!"),
]


def write_dataset(path: Path, rows: list[tuple[str, str]] = QA) -> Path:
    path.write_text("".join(chat_line(q, a) + "\n" for q, a in rows))
    return path


# --- the evaluation split ---------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(1, 0.1, 0), (3, 0.5, 0), (4, 0.1, 1), (12, 0.1, 1), (20, 0.1, 2), (20, 0.25, 5), (50, 0, 0)],
)
def test_eval_count_rule(n: int, fraction: float, expected: int) -> None:
    assert eval_count(n, fraction) == expected


# --- training ---------------------------------------------------------------------

STEPS = 3


def train(base: Path, data: Path, out: Path, **kw: object) -> TrainingResult:
    settings: dict[str, object] = {"steps": STEPS, "batch_size": 2, "progress": False}
    settings.update(kw)
    return train_lora(base, data, out, **settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainingResult]:
    """Three short trainings on the tiny model: seed 0 twice, seed 1 once."""
    root = tmp_path_factory.mktemp("lora")
    data = write_dataset(root / "pirate.jsonl")
    base = tiny_llama_dir()
    results: dict[str, TrainingResult] = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        torch.manual_seed(len(results))  # the caller's RNG state must not matter
        results[name] = train(base, data, root / "out" / name, seed=seed)
    return results


def test_same_seed_gives_identical_adapters(runs: dict[str, TrainingResult]) -> None:
    a, b, c = runs["a"], runs["b"], runs["c"]
    weights = "adapter_model.safetensors"
    assert (a.adapter_dir / weights).read_bytes() == (b.adapter_dir / weights).read_bytes()
    assert a.metadata["loss_history"] == b.metadata["loss_history"]
    assert (a.final_train_loss, a.eval_loss) == (b.final_train_loss, b.eval_loss)
    assert (a.adapter_dir / weights).read_bytes() != (c.adapter_dir / weights).read_bytes()


def test_the_adapter_folder_is_registry_ready(runs: dict[str, TrainingResult]) -> None:
    out = runs["a"].adapter_dir
    assert {p.name for p in out.iterdir()} == ADAPTER_FILES
    assert sorted(p.name for p in out.parent.iterdir()) == ["a", "b", "c"]  # no temp left
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["base_model_name_or_path"] == str(tiny_llama_dir().resolve())
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 4 * 2  # layers x modules x (A, B)
    prefix = "base_model.model.model.layers.1.self_attn"
    assert tensors[f"{prefix}.q_proj.lora_A.weight"].shape == (8, 128)
    assert tensors[f"{prefix}.k_proj.lora_B.weight"].shape == (128, 8)
    trained_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert all(bool(t.abs().sum() > 0) for t in trained_b)  # B starts at zero: it learned


def test_metadata_records_how_the_adapter_was_made(
    runs: dict[str, TrainingResult], tmp_path: Path
) -> None:
    result = runs["a"]
    meta = json.loads((result.adapter_dir / METADATA_FILE).read_text())
    assert meta == result.metadata
    data = write_dataset(tmp_path / "same.jsonl")
    assert meta["dataset_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    base = tiny_llama_dir()
    assert meta["base_model_path"] == str(base.resolve())
    assert meta["base_model_fingerprint"] == model_content_hash(base)
    assert len(meta["base_model_shape_fingerprint"]) == 16
    assert (meta["num_examples"], meta["num_train"], meta["num_eval"]) == (5, 4, 1)
    assert (result.num_train, result.num_eval) == (4, 1)
    assert (meta["steps"], meta["seed"], meta["rank"], meta["alpha"]) == (STEPS, 0, 8, 16)
    assert len(meta["loss_history"]) == STEPS
    for key in ("final_train_loss", "eval_loss", "initial_eval_loss"):
        assert isinstance(meta[key], float) and math.isfinite(meta[key]) and meta[key] > 0
    assert meta["final_train_loss"] == result.final_train_loss
    assert meta["eval_loss"] == result.eval_loss
    assert meta["duration_s"] == result.duration_s > 0
    assert meta["eval_lines"][0] in range(1, 6)


def test_loss_goes_down_with_training(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d.jsonl", QA[:3])  # < 4 examples: no eval split
    base = tiny_llama_dir()
    short = train(base, data, tmp_path / "short", steps=1, learning_rate=1e-2)
    longer = train(base, data, tmp_path / "long", steps=12, learning_rate=1e-2)
    assert short.eval_loss is None and short.num_eval == 0
    assert longer.final_train_loss < short.final_train_loss


def test_the_callers_torch_state_is_left_alone(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d.jsonl", QA[:2])
    torch.manual_seed(1234)
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    train(tiny_llama_dir(), data, tmp_path / "out", steps=1, num_threads=1)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before


# --- failures leave nothing behind -------------------------------------------------


def assert_nothing_left(parent: Path, *keep: str) -> None:
    assert sorted(p.name for p in parent.iterdir()) == sorted(keep)


def test_a_crash_while_writing_leaves_no_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import PeftModel

    original = PeftModel.save_pretrained

    def save_then_crash(self: object, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        raise OSError("disk full")

    monkeypatch.setattr(PeftModel, "save_pretrained", save_then_crash)
    data = write_dataset(tmp_path / "d.jsonl", QA[:2])
    out_parent = tmp_path / "adapters"
    with pytest.raises(OSError, match="disk full"):
        train(tiny_llama_dir(), data, out_parent / "pirate", steps=1)
    assert_nothing_left(out_parent)


def test_an_interrupt_during_training_leaves_no_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("adapters.tooling.training._train", interrupted)
    data = write_dataset(tmp_path / "d.jsonl", QA[:2])
    with pytest.raises(KeyboardInterrupt):
        train(tiny_llama_dir(), data, tmp_path / "out" / "pirate")
    assert not (tmp_path / "out" / "pirate").exists()


def test_an_existing_out_dir_is_refused_before_training(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d.jsonl")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        train(Path("/nonexistent-base"), data, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"rank": 0}, "rank must be >= 1"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"eval_fraction": 1.0}, "eval_fraction must be in [0, 1)"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"target_modules": "q_proj"}, "target_modules"),
        ({"num_threads": 0}, "num_threads must be >= 1"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, setting: dict[str, object], message: str) -> None:
    data = write_dataset(tmp_path / "d.jsonl")
    with pytest.raises(TrainingError, match=message.replace("[", r"\[").replace(")", r"\)")):
        train(tiny_llama_dir(), data, tmp_path / "out", **setting)
    assert not (tmp_path / "out").exists()


def test_an_unknown_target_module_is_a_training_error(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d.jsonl", QA[:2])
    with pytest.raises(TrainingError, match="cannot apply LoRA"):
        train(tiny_llama_dir(), data, tmp_path / "out", target_modules=("nope_proj",))
    assert_nothing_left(tmp_path, "d.jsonl")


def test_an_invalid_dataset_is_reported_before_loading_the_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD + "\n{nope\n")
    with pytest.raises(DatasetError) as caught:
        train(Path("/nonexistent-base"), bad, tmp_path / "out")
    assert caught.value.line == 2


def test_examples_too_long_to_learn_from_are_dataset_errors(tmp_path: Path) -> None:
    rows = [QA[0], ("word " * 40, "Arr, matey!"), QA[1], ("more " * 40, "Arr!")]
    data = write_dataset(tmp_path / "d.jsonl", rows)
    with pytest.raises(DatasetError) as caught:
        train(tiny_llama_dir(), data, tmp_path / "out", max_length=40)
    assert [issue.line for issue in caught.value.issues] == [2, 4]
    assert "no assistant token within the first 40 tokens" in str(caught.value)
    assert not (tmp_path / "out").exists()


# --- atomic folders ----------------------------------------------------------------


def test_atomic_directory_renames_on_success_and_is_readable(tmp_path: Path) -> None:
    target = tmp_path / "kit"
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".kit.")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f.txt").write_text("x")
        assert not target.exists()
    assert (target / "sub" / "f.txt").read_text() == "x"
    assert os.stat(target).st_mode & 0o777 == 0o755
    assert os.stat(target / "sub" / "f.txt").st_mode & 0o777 == 0o644
    assert_nothing_left(tmp_path, "kit")


def test_atomic_directory_cleans_up_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "kit") as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert_nothing_left(tmp_path)


def test_atomic_directory_never_replaces_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "kit"
    with pytest.raises(FileExistsError), atomic_directory(target):
        target.mkdir()  # appears while building: an empty folder rename() would replace
    assert_nothing_left(tmp_path, "kit")
    with pytest.raises(FileExistsError), atomic_directory(target):
        pass
