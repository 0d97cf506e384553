"""How a gateway loads its tokenizer: ``tokenizer.json`` and the chat template read
without ``transformers`` (``FolderTokenizer``), giving the ids ``AutoTokenizer`` gives
whatever tokenizer class the folder's ``tokenizer_config.json`` names.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.model_io.model_tokenizer import TokenizerFilesError
from gateway.model_io.prompt_renderer import PromptRenderer

pytestmark = pytest.mark.integration  # a subprocess, and transformers' AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import sys
from pathlib import Path
from gateway.model_io.prompt_renderer import PromptRenderer
renderer = PromptRenderer.from_model_dir(Path(sys.argv[1]))
renderer.chat([{"role": "user", "content": "Hi"}])
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""

CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "La capitale de la France est Paris."},
        {"role": "user", "content": "Et de l'Italie ? <|im_end|>"},
    ],
    [
        {"role": "user", "content": "Ünïcödé 日本語 🙂\n\n  x  "},
        {"role": "assistant", "content": ""},
    ],
]


def auto_renderer(folder: Path) -> PromptRenderer:
    from transformers import AutoTokenizer

    return PromptRenderer(AutoTokenizer.from_pretrained(str(folder)))


def test_a_gateway_loads_its_tokenizer_without_transformers(tokenizer_dir: Path) -> None:
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
    # the folder's own; one transformers rebuilds from vocab and merges; transformers 4's
    [None, "GPT2Tokenizer", "PreTrainedTokenizerFast"],
)
def test_the_ids_are_auto_tokenizers_whatever_class_the_folder_names(
    tokenizer_dir: Path, tmp_path: Path, tokenizer_class: str | None
) -> None:
    folder = tokenizer_dir
    if tokenizer_class is not None:
        folder = naming(tokenizer_dir, tmp_path / "tokenizer", tokenizer_class)
    ours, auto = PromptRenderer.from_model_dir(folder), auto_renderer(folder)

    for messages in CONVERSATIONS:
        assert ours.chat(messages) == auto.chat(messages)
    prompt = "<|im_start|>user\nraw <b>text</b><|im_end|>"
    assert ours.text(prompt) == auto.text(prompt)
    assert ours.decode(ours.text(prompt)) == auto.decode(auto.text(prompt))


def test_a_folder_without_tokenizer_json_is_refused_by_name(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tokenizer_dir, folder)
    (folder / "tokenizer.json").unlink()

    with pytest.raises(TokenizerFilesError, match=r"no tokenizer\.json"):
        PromptRenderer.from_model_dir(folder)
