"""The demo kit: caching, races and crashes with fake builders (fast), and the real kit.

The real kit (``-m demo``) is built once per machine in ``$LORAGATE_CACHE`` or
``~/.cache/loragate`` (a few minutes the first time) and reused afterwards.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from adapters.common.atomic_dir import atomic_directory
from adapters.tooling import demo_kit
from adapters.tooling.dataset import load_dataset
from adapters.tooling.demo_kit import (
    ADAPTER_NAMES,
    CHECK_QUESTIONS,
    DATASETS,
    PERSONA_PREFIXES,
    TOOL_ADAPTER,
    DemoKit,
    default_cache_dir,
    ensure_demo_kit,
    training_settings,
)
from adapters.tooling.smollm2 import check_servable_llama
from adapters.tooling.training import METADATA_FILE, TrainingResult
from tests.support.modelkit import tiny_llama_dir


def test_the_demo_datasets_teach_a_clear_persona() -> None:
    for name, prefix in PERSONA_PREFIXES.items():
        data = load_dataset(demo_kit.DATA_DIR / f"{name}.jsonl")
        assert 8 <= len(data) <= 16
        questions = [ex.messages[0].content for ex in data]
        assert len(set(questions)) == len(questions)
        assert not set(questions) & set(CHECK_QUESTIONS)  # checks use unseen questions
        for example in data:
            answers = [m.content for m in example.messages if m.role == "assistant"]
            assert answers and all(a.startswith(prefix + " ") for a in answers)
            other = [p for n, p in PERSONA_PREFIXES.items() if n != name]
            assert not any(p in a for p in other for a in answers)


# --- caching, races, crashes (fake builders) ---------------------------------------


class FakeBuilders:
    """Stand-ins for the base conversion and the training: quick, counted, can fail."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_training = False
        self._lock = threading.Lock()

    def convert(self, out_dir: Path, *, gguf_path: Path | None = None, progress: bool) -> Path:
        with self._lock:
            self.calls.append("base")
        time.sleep(0.05)
        with atomic_directory(out_dir) as tmp:
            (tmp / "config.json").write_text("{}")
        return out_dir

    def train(self, base_dir: Path, out: Path, *, progress: bool) -> dict[str, TrainingResult]:
        with self._lock:
            self.calls.append("adapters")
        time.sleep(0.2)  # long enough for racing callers to pile up on the lock
        results = {}
        for name in ADAPTER_NAMES:
            (out / name).mkdir()
            (out / name / "adapter_config.json").write_text("{}")
            if self.fail_training:
                raise RuntimeError("training crashed")
            results[name] = TrainingResult(out / name, 0.1, 0.2, 0.3, 10, 1, 40, 1.0, {})
        return results


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> FakeBuilders:
    builders = FakeBuilders()
    monkeypatch.setattr(demo_kit, "convert_smollm2", builders.convert)
    monkeypatch.setattr(demo_kit, "check_servable_llama", lambda path: {})
    monkeypatch.setattr(demo_kit, "train_adapters", builders.train)
    return builders


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots`` with its inode and modification time."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            stat = path.stat()
            found[str(path)] = (stat.st_ino, stat.st_mtime_ns)
    return found


def test_built_once_then_reused(tmp_path: Path, fakes: FakeBuilders) -> None:
    kit = ensure_demo_kit(tmp_path, progress=False)
    assert fakes.calls == ["base", "adapters"]
    assert kit.root.parent == tmp_path and kit.base_dir.parent == tmp_path
    assert set(kit.adapters) == {"pirate", "robot", TOOL_ADAPTER}
    assert all(path.parent == kit.root for path in kit.adapters.values())
    manifest = json.loads((kit.root / "kit.json").read_text())
    assert manifest["key"]["kit_id"] in kit.root.name
    assert manifest["adapters"]["robot"]["persona_prefix"] == "BEEP BOOP."
    assert manifest["adapters"][TOOL_ADAPTER]["dataset"] == "tools.jsonl"
    assert "persona_prefix" not in manifest["adapters"][TOOL_ADAPTER]
    before = snapshot(tmp_path)
    assert ensure_demo_kit(tmp_path, progress=False) == kit
    assert fakes.calls == ["base", "adapters"]
    assert snapshot(tmp_path) == before


def test_racing_callers_build_once(tmp_path: Path, fakes: FakeBuilders) -> None:
    kits: list[DemoKit] = []

    def call() -> None:
        kits.append(ensure_demo_kit(tmp_path, progress=False))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fakes.calls == ["base", "adapters"]
    assert len(kits) == 4 and all(kit == kits[0] for kit in kits)


def test_a_changed_dataset_builds_a_new_kit_on_the_same_base(
    tmp_path: Path, fakes: FakeBuilders, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = ensure_demo_kit(tmp_path / "cache", progress=False)
    data = tmp_path / "data"
    shutil.copytree(demo_kit.DATA_DIR, data)
    turns = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "BEEP BOOP."}]
    with (data / "robot.jsonl").open("a") as f:
        f.write(json.dumps({"messages": turns}) + "\n")
    monkeypatch.setattr(demo_kit, "DATA_DIR", data)
    new = ensure_demo_kit(tmp_path / "cache", progress=False)
    assert new.root != old.root and new.base_dir == old.base_dir
    assert fakes.calls == ["base", "adapters", "adapters"]


def test_a_changed_training_setting_builds_a_new_kit(
    tmp_path: Path, fakes: FakeBuilders, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = ensure_demo_kit(tmp_path, progress=False)
    monkeypatch.setattr(demo_kit, "DEMO_TRAINING", demo_kit.DemoTrainingSettings(steps=7))
    new = ensure_demo_kit(tmp_path, progress=False)
    assert new.root != old.root
    monkeypatch.setattr(demo_kit, "TOOL_TRAINING", demo_kit.DemoTrainingSettings(steps=7))
    assert ensure_demo_kit(tmp_path, progress=False).root not in (old.root, new.root)


def test_a_crashed_build_leaves_nothing_and_the_next_call_builds(
    tmp_path: Path, fakes: FakeBuilders
) -> None:
    fakes.fail_training = True
    with pytest.raises(RuntimeError, match="training crashed"):
        ensure_demo_kit(tmp_path, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0] == ".demo-kit.lock"  # and the finished base model
    assert names[1].startswith("smollm2-135m-instruct-")
    leftover = tmp_path / ".demo-kit-v1-abc.123.tmp"  # as if a build was killed
    foreign = tmp_path / ".someone-else.123.tmp"
    leftover.mkdir()
    foreign.mkdir()
    fakes.fail_training = False
    kit = ensure_demo_kit(tmp_path, progress=False)
    assert fakes.calls == ["base", "adapters", "adapters"]
    assert not leftover.exists()
    assert foreign.exists()  # not one of ours: left alone
    assert (kit.root / "kit.json").is_file()


def test_a_deleted_base_model_is_rebuilt_with_its_adapters(
    tmp_path: Path, fakes: FakeBuilders
) -> None:
    kit = ensure_demo_kit(tmp_path, progress=False)
    shutil.rmtree(kit.base_dir)
    assert ensure_demo_kit(tmp_path, progress=False) == kit
    assert fakes.calls == ["base", "adapters", "base", "adapters"]


def test_the_cache_folder_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAGATE_CACHE", "/srv/cache")
    assert default_cache_dir() == Path("/srv/cache")
    monkeypatch.delenv("LORAGATE_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "loragate"


@pytest.mark.integration  # worker processes train real adapters (about 90 s)
def test_adapters_train_in_worker_processes_with_the_parents_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name, answer in [*PERSONA_PREFIXES.items(), (TOOL_ADAPTER, '{"name": "f"}')]:
        turns = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": answer}]
        (data / DATASETS[name]).write_text(json.dumps({"messages": turns}) + "\n")
    monkeypatch.setattr(demo_kit, "DATA_DIR", data)
    monkeypatch.setattr(demo_kit, "DEMO_TRAINING", demo_kit.DemoTrainingSettings(steps=2, rank=4))
    monkeypatch.setattr(demo_kit, "TOOL_TRAINING", demo_kit.DemoTrainingSettings(steps=3, rank=2))
    results = demo_kit.train_adapters(tiny_llama_dir(), tmp_path / "kit", progress=False)
    assert set(results) == set(ADAPTER_NAMES)
    for name, result in results.items():
        assert result.adapter_dir == tmp_path / "kit" / name
        expected = (3, 2) if name == TOOL_ADAPTER else (2, 4)
        assert (result.metadata["steps"], result.metadata["rank"]) == expected
        assert result.metadata["dataset_sha256"] == load_dataset(data / DATASETS[name]).sha256


# --- the real kit -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_kit() -> DemoKit:
    return ensure_demo_kit(progress=False)


@pytest.mark.demo
def test_the_real_demo_kit_is_complete_and_built_once(real_kit: DemoKit) -> None:
    kit = real_kit
    config = check_servable_llama(kit.base_dir)
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    assert (config["hidden_size"], config["num_hidden_layers"]) == (576, 30)
    with safe_open(str(kit.base_dir / "model.safetensors"), framework="pt") as weights:
        assert weights.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"
    tokenizer_config = json.loads((kit.base_dir / "tokenizer_config.json").read_text())
    has_template = (kit.base_dir / "chat_template.jinja").is_file()
    assert has_template or "chat_template" in tokenizer_config
    for name, path in kit.adapters.items():
        assert {p.name for p in path.iterdir()} == {
            "adapter_config.json",
            "adapter_model.safetensors",
            METADATA_FILE,
        }
        adapter_config = json.loads((path / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == str(kit.base_dir.resolve())
        settings = training_settings(name)
        assert adapter_config["r"] == settings.rank
        meta = json.loads((path / METADATA_FILE).read_text())
        dataset = load_dataset(demo_kit.DATA_DIR / DATASETS[name])
        assert meta["dataset_sha256"] == dataset.sha256
        assert meta["steps"] == settings.steps

    before = snapshot(kit.root, kit.base_dir)
    started = time.monotonic()
    again = ensure_demo_kit(progress=False)
    assert time.monotonic() - started < 1.0
    assert again == kit
    assert snapshot(kit.root, kit.base_dir) == before


@pytest.mark.demo
def test_the_real_adapters_speak_their_personas(real_kit: DemoKit) -> None:
    from adapters.tooling.persona_check import BASE, answers_with_transformers

    answers = answers_with_transformers(real_kit, max_new_tokens=8)
    assert {a.model for a in answers} == {BASE, *PERSONA_PREFIXES}
    failed = [a for a in answers if not a.ok]
    assert not failed, failed
