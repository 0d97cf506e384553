"""Coming from ``vllm serve``: the serve flags without a config file, ``engine.extra_args``
checked against vLLM's argument definitions, help texts and ``--version``, and (engine)
vLLM's own ``vllm:*`` series on ``/metrics``.

The unit tests check ``extra_args`` against a stand-in for ``AsyncEngineArgs`` (importing
vLLM takes a minute on a small machine); the ``engine`` ones against the real thing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ConfigDict, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

import gateway.cli.main
from gateway.cli.main import build_parser, main
from gateway.settings import Settings, vllm_args
from gateway.settings.vllm_args import argument_types, check_extra_args, engine_arg_values
from tests.conftest import FakeKit
from tests.support.engine_fixtures import LIVE_ADMIN_KEY, LiveGateway


@pydantic_dataclass(config=ConfigDict(extra="forbid"))
class StandInCompilationConfig:
    mode: int = 0
    backend: str = ""


@dataclasses.dataclass
class StandInEngineArgs:
    """The shape of vLLM's ``AsyncEngineArgs`` (string annotations, as vLLM has some)."""

    model: str = ""
    max_loras: int = 1
    tensor_parallel_size: int = 1
    quantization: str | None = None
    enable_prefix_caching: bool | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    gpu_memory_utilization: float = 0.9
    compilation_config: StandInCompilationConfig = dataclasses.field(
        default_factory=StandInCompilationConfig
    )
    hf_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    hf_token: bool | str | None = None
    # vLLM names this type for type checkers only: the annotation does not resolve.
    quantization_config: UndefinedHere | None = None  # type: ignore[name-defined]  # noqa: F821
    _api_process_count: int = 1


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    types = argument_types(StandInEngineArgs)
    monkeypatch.setattr(vllm_args, "vllm_argument_types", lambda: types)
    return types


def engine_errors(extra_args: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings.load(None, model={"path": "/m"}, engine={"extra_args": extra_args})
    (error,) = caught.value.errors()
    assert error["loc"] == ("engine", "extra_args")
    return str(error["msg"])


# ------------------------------------------------------------------ engine.extra_args


def test_extra_args_pass_through_with_vllm_names(stand_in: dict[str, Any]) -> None:
    extra_args = {
        "tensor-parallel-size": 2,  # vllm serve's spelling
        "enable_prefix_caching": True,
        "max_num_batched_tokens": 4096,
        "quantization": None,
        "kv_cache_dtype": "fp8",
        "compilation_config": {"mode": 3},
        "hf_overrides": {"rope_theta": 1e6},
        "quantization_config": {"anything": "vLLM checks it"},  # annotation unresolvable
    }
    settings = Settings.load(None, model={"path": "/m"}, engine={"extra_args": extra_args})
    extra = settings.engine.extra_args  # type: ignore[union-attr]
    assert extra["tensor_parallel_size"] == 2 and "tensor-parallel-size" not in extra
    values = engine_arg_values(extra)
    assert values["compilation_config"] == StandInCompilationConfig(mode=3)
    assert values["enable_prefix_caching"] is True


def test_unknown_argument_names_the_closest(stand_in: dict[str, Any]) -> None:
    message = engine_errors({"tensor_paralel_size": 2})
    assert "tensor_paralel_size: not a vLLM engine argument" in message
    assert "did you mean tensor_parallel_size?" in message
    assert "not a vLLM engine argument" in engine_errors({"_api_process_count": 2})


def test_ill_typed_values_say_what_vllm_expects_never_the_value(
    stand_in: dict[str, Any],
) -> None:
    message = engine_errors(
        {
            "tensor_parallel_size": "s3cret-looking",
            "enable_prefix_caching": "yes",
            "kv_cache_dtype": "fp16",
            "max_num_batched_tokens": 1.5,
            "compilation_config": {"mode": "fast", "colour": 1},
        }
    )
    assert "tensor_parallel_size: expects an integer, got a string" in message
    assert "enable_prefix_caching: expects true/false or null, got a string" in message
    assert "kv_cache_dtype: expects one of 'auto', 'fp8', got a string" in message
    assert "max_num_batched_tokens: expects an integer or null, got a number" in message
    assert "compilation_config: mode: Input should be a valid integer" in message
    assert "colour: Unexpected keyword argument" in message
    assert "s3cret-looking" not in message and "fast" not in message


def test_arguments_loragate_sets_are_refused_with_the_setting_to_use(
    stand_in: dict[str, Any],
) -> None:
    message = engine_errors({"max_loras": 8, "model": "/x", "gpu_memory_utilization": 0.5})
    assert "max_loras: set by loragate; use engine.max_loras (loragate serve --max-loras)" in (
        message
    )
    assert "model: set by loragate; use model.path" in message
    assert "gpu_memory_utilization: set by loragate; use engine.memory_fraction" in message
    chat = engine_errors({"chat-template": "/t.jinja"})
    assert "chat_template: not a vLLM engine argument; the gateway renders chat prompts" in chat


def test_without_vllm_names_go_unchecked_but_reserved_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "vllm.engine.arg_utils", None)  # import fails
    caplog.set_level(logging.WARNING, logger="gateway.settings.vllm_args")
    assert vllm_args.vllm_argument_types.__wrapped__() is None
    assert "engine.extra_args not checked: vLLM cannot be imported here" in caplog.text
    monkeypatch.setattr(vllm_args, "vllm_argument_types", lambda: None)
    assert check_extra_args({"anything-goes": 1}) == {"anything_goes": 1}
    assert "set by loragate" in engine_errors({"enable_lora": True})


def test_no_extra_args_never_imports_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("vLLM imported for nothing")

    monkeypatch.setattr(vllm_args, "vllm_argument_types", refuse)
    Settings.load(None, model={"path": "/m"})
    assert engine_arg_values({}) == {}


# ------------------------------------------------------------------ loragate serve


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Settings, Path | None, Any]]:
    calls: list[tuple[Settings, Path | None, Any]] = []

    def fake_serve(
        settings: Settings, config_path: Path | None = None, overrides: Any = None
    ) -> None:
        calls.append((settings, config_path, overrides))

    monkeypatch.setattr(gateway.cli.main, "_serve", fake_serve)
    return calls


def test_serve_without_a_config_file_like_vllm_serve(
    fake_kit: FakeKit, stand_in: dict[str, Any], started: list[Any]
) -> None:
    pirate, robot = fake_kit.adapters["pirate"], fake_kit.adapters["robot"]
    argv = ["serve", "--model", str(fake_kit.base), "--served-model-name", "tiny"]
    argv += ["--enable-lora", "--lora-modules", f"pirate={pirate}", f"robot={robot}"]
    argv += ["--engine-arg", "enable-prefix-caching=true", "--engine-arg", "tensor_parallel_size=1"]
    argv += ["--max-loras", "2", "--max-lora-rank", "8", "--dtype", "float32", "--enforce-eager"]
    assert main(argv) == 0
    ((settings, config_path, _),) = started
    assert config_path is None
    assert (settings.model.path, settings.model.served_name) == (fake_kit.base, "tiny")
    assert [(a.name, a.path) for a in settings.adapters] == [("pirate", pirate), ("robot", robot)]
    engine = settings.engine
    assert engine.kind == "vllm"
    assert (engine.max_loras, engine.max_lora_rank, engine.dtype) == (2, 8, "float32")
    assert engine.enforce_eager is True
    assert engine.extra_args == {"enable_prefix_caching": True, "tensor_parallel_size": 1}


def test_serve_flags_override_the_file_and_the_environment(
    fake_kit: FakeKit,
    tmp_path: Path,
    stand_in: dict[str, Any],
    started: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "loragate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(fake_kit.base), "name": "tiny-base"},
                "adapters": [{"name": n, "path": str(p)} for n, p in fake_kit.adapters.items()],
                "engine": {"max_loras": 3, "extra_args": {"max_num_batched_tokens": 512}},
            }
        )
    )
    monkeypatch.setenv("LORAGATE_ENGINE__MAX_LORAS", "7")
    monkeypatch.setenv("LORAGATE_ENGINE__MAX_MODEL_LEN", "512")
    moved = fake_kit.adapters["robot"]
    argv = ["serve", "--config", str(path), "--max-loras", "5", "--lora", f"pirate={moved}"]
    argv += ["--engine-arg", "enable_prefix_caching=false", "--port", "9001"]
    assert main(argv) == 0
    settings, config_path, overrides = started[-1]
    assert config_path == path and overrides["server"] == {"port": 9001}
    assert settings.engine.max_loras == 5  # the flag beats the file and the variable
    assert settings.engine.max_model_len == 512  # the variable still beats the file
    assert settings.model.served_name == "tiny-base"
    assert {a.name: a.path for a in settings.adapters} == {"pirate": moved, "robot": moved}
    assert settings.engine.extra_args == {  # type: ignore[union-attr]
        "max_num_batched_tokens": 512,
        "enable_prefix_caching": False,
    }
    assert settings.server.port == 9001


def test_serve_refuses_bad_flags_with_field_paths(
    stand_in: dict[str, Any], started: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve"]) == 2
    assert "give --config FILE, --model DIR, or both" in capsys.readouterr().err
    assert main(["serve", "--model", "/m", "--engine-arg", "max_num_batch_tokens=8k"]) == 2
    err = capsys.readouterr().err
    assert "command line: 1 error(s)" in err
    assert "engine.extra_args: " in err and "did you mean max_num_batched_tokens?" in err
    with pytest.raises(SystemExit):
        main(["serve", "--model", "/m", "--lora", "no-path-given"])
    assert "expected NAME=PATH" in capsys.readouterr().err
    assert started == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"loragate {gateway.cli.main.package_version()}"
    assert gateway.cli.main.package_version()[0].isdigit()


def all_actions(parser: argparse.ArgumentParser, path: str = "loragate") -> Iterator[Any]:
    # argparse has no public API that lists a parser's arguments, groups or subcommands.
    groups = parser._mutually_exclusive_groups  # noqa: SLF001 (argparse: no public list)
    required_groups = {
        id(a)
        for g in groups
        if g.required
        for a in g._group_actions  # noqa: SLF001 (argparse: no public list)
    }
    subparsers = argparse._SubParsersAction  # noqa: SLF001 (argparse: no public type)
    builtin = (argparse._HelpAction, argparse._VersionAction)  # noqa: SLF001 (same)
    for action in parser._actions:  # noqa: SLF001 (argparse: no public list)
        if isinstance(action, subparsers):
            for name, sub in action.choices.items():
                yield from all_actions(sub, f"{path} {name}")
        elif not isinstance(action, builtin):
            yield path, action, id(action) in required_groups


def test_every_flag_has_help_and_says_its_default() -> None:
    missing, no_default = [], []
    for path, action, in_required_group in all_actions(build_parser()):
        name = f"{path} {'/'.join(action.option_strings) or action.dest}"
        if not action.help:
            missing.append(name)
        optional_value = action.option_strings and action.nargs != 0 and not action.required
        if optional_value and not in_required_group and "default" not in (action.help or ""):
            no_default.append(name)
    assert missing == [] and no_default == []


# ------------------------------------------------------------------ the real vLLM


@pytest.mark.engine
@pytest.mark.integration  # imports vLLM (seconds), which runs `file` on its first import
def test_extra_args_against_vllms_own_definitions(fake_kit: FakeKit) -> None:
    from vllm.config import CompilationConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    from gateway.engine.vllm_engine import engine_args

    extra = {
        "tensor_parallel_size": 1,
        "quantization": None,
        "max_num_batched_tokens": 4096,
        "enable_prefix_caching": True,
        "compilation_config": {"mode": 0},
        "kv_cache_dtype": "auto",
        "attention_backend": "CPU_ATTN",
    }
    settings = Settings.load(None, model={"path": fake_kit.base}, engine={"extra_args": extra})
    built = engine_args(settings.model, settings.engine)  # type: ignore[arg-type]
    assert isinstance(built, AsyncEngineArgs)
    assert built.max_num_batched_tokens == 4096 and built.enable_prefix_caching is True
    assert isinstance(built.compilation_config, CompilationConfig)
    assert built.enable_lora is True and built.max_loras == settings.engine.max_loras
    message = engine_errors({"max_num_batch_tokens": 4096, "tensor_parallel_size": "2"})
    assert "did you mean max_num_batched_tokens?" in message
    assert "tensor_parallel_size: expects an integer, got a string" in message
    assert "set by loragate" in engine_errors({"max_lora_rank": 8})


@pytest.mark.engine
def test_metrics_carry_vllms_own_series_next_to_loragates(live_gateway: LiveGateway) -> None:
    headers = {"Authorization": f"Bearer {LIVE_ADMIN_KEY}"}
    body = {"model": "tiny-llama", "prompt": "hello", "max_tokens": 4}
    r = httpx.post(live_gateway.base_url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    text = httpx.get(live_gateway.base_url + "/metrics", headers=headers, timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    running = families["vllm:num_requests_running"].samples
    assert running and running[0].labels["model_name"] == "tiny-llama"
    prompt = [s for s in families["vllm:prompt_tokens"].samples if s.name.endswith("_total")]
    assert sum(s.value for s in prompt) > 0
    assert "loragate_requests" in families and "loragate_engine_running_requests" in families
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(names) == len(set(names))


def test_readme_says_where_the_cpu_torch_comes_from() -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert "## Prerequisites" in readme
    coming_from = (root / "docs" / "coming-from-vllm-litellm.md").read_text()
    for heading in ("## Coming from vLLM", "## Coming from LiteLLM"):
        assert heading in coming_from
    assert "make install PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in readme
    assert "--extra-index-url $(PIP_EXTRA_INDEX_URL)" in (root / "Makefile").read_text()
