"""How a gateway loads its tokenizer: the class the model folder names, without torch.

``AutoTokenizer`` imports transformers' model registry and with it torch: a remote-mode
gateway was ready after 7.5 s, and after 3.1 s without it. The renderer loads the class
``tokenizer_config.json`` names instead, and must give the very ids ``AutoTokenizer``'s
tokenizer gives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from tests.support.chat_samples import ORDINARY

REPO_ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
from pathlib import Path
from typing import Any
from gateway.model_io.prompt_renderer import PromptRenderer
renderer = PromptRenderer.from_model_dir(Path(sys.argv[1]))
renderer.chat([{"role": "user", "content": "Hi"}])
print(sorted(m for m in ("torch", "transformers.models.auto") if m in sys.modules))
"""


def auto_renderer(folder: Path) -> PromptRenderer:
    from transformers import AutoTokenizer

    return PromptRenderer(AutoTokenizer.from_pretrained(str(folder)))


def test_a_gateway_loads_its_tokenizer_without_importing_torch(tokenizer_dir: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(tokenizer_dir)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=True,
    )

    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr


def naming(tokenizer_dir: Path, folder: Path, tokenizer_class: str) -> Path:
    """A copy of ``tokenizer_dir`` whose config names ``tokenizer_class``."""
    shutil.copytree(tokenizer_dir, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = tokenizer_class
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "tokenizer_class",
    # the folder's own; one whose fast variant AutoTokenizer picks; transformers 4's name
    [None, "GPT2Tokenizer", "PreTrainedTokenizerFast"],
)
def test_the_named_class_gives_auto_tokenizers_ids(
    tokenizer_dir: Path, tmp_path: Path, tokenizer_class: str | None
) -> None:
    folder = tokenizer_dir
    if tokenizer_class is not None:
        folder = naming(tokenizer_dir, tmp_path / "tokenizer", tokenizer_class)
    direct, auto = PromptRenderer.from_model_dir(folder), auto_renderer(folder)

    assert type(direct._tokenizer) is type(auto._tokenizer)
    for messages in ORDINARY:
        assert direct.chat(messages) == auto.chat(messages)
    prompt = "<|im_start|>user\nraw <b>text</b><|im_end|>"
    assert direct.text(prompt) == auto.text(prompt)


def test_a_folder_naming_no_known_class_falls_back_to_auto_tokenizer(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    folder = naming(tokenizer_dir, tmp_path / "tokenizer", "NoSuchTokenizerAnywhere")

    renderer = PromptRenderer.from_model_dir(folder)

    assert renderer.chat(ORDINARY[0]) == auto_renderer(tokenizer_dir).chat(ORDINARY[0])


def test_the_fast_variant_is_preferred_as_auto_tokenizer_prefers_it(
    tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In transformers 4 ``GPT2Tokenizer`` is the slow Python class and
    ``GPT2TokenizerFast`` the Rust one ``AutoTokenizer`` loads; transformers 5 makes them
    one class. Stand a slow class in for the name to see which one is picked."""
    import transformers

    class SlowTokenizer(transformers.PreTrainedTokenizerBase):
        @classmethod
        def from_pretrained(cls, *args: object, **kwargs: object) -> Any:
            raise AssertionError("the slow class was loaded")

    monkeypatch.setattr(transformers, "GPT2Tokenizer", SlowTokenizer)
    folder = naming(tokenizer_dir, tmp_path / "tokenizer", "GPT2Tokenizer")

    renderer = PromptRenderer.from_model_dir(folder)

    assert type(renderer._tokenizer) is transformers.GPT2TokenizerFast  # type: ignore[attr-defined]
