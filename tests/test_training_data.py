"""Chat dataset validation (every error kind, with line numbers) and assistant-only masking."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from adapters.tooling.chat_encoding import IGNORE_INDEX, ChatEncodingError, encode_chat
from adapters.tooling.dataset import DatasetError, load_dataset, parse_dataset
from tests.support.modelkit import smollm2_tokenizer_dir
from tests.support.training_data import GOOD, chat_line


def test_a_valid_dataset_loads_with_lines_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(GOOD + "\n\n   \n" + chat_line("Q?", "A.", system="Be brief.") + "\n")
    data = load_dataset(path)
    assert len(data) == 2
    assert [ex.line for ex in data] == [1, 4]  # blank lines skipped, numbering kept
    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.source == str(path)
    assert [m.role for m in data.examples[1].messages] == ["system", "user", "assistant"]
    assert data.examples[1].to_dicts()[0] == {"role": "system", "content": "Be brief."}


def msgs(*pairs: tuple[str, object]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in pairs]})


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"messages": [', "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got a list"),
        ('{"turns": []}', "missing key 'messages'"),
        (
            '{"messages": [{"role": "user", "content": "a"}, '
            '{"role": "assistant", "content": "b"}], "id": 3}',
            "unexpected key 'id'",
        ),
        ('{"messages": "hello"}', "'messages' must be a list, got a string"),
        ('{"messages": []}', "'messages' is empty"),
        ('{"messages": [42]}', "messages[0] must be an object, got a number"),
        ('{"messages": [{"content": "hi"}]}', "messages[0] is missing 'role'"),
        ('{"messages": [{"role": "user"}]}', "messages[0] is missing 'content'"),
        (msgs(("user", "q"), ("bot", "a")), "messages[1].role is 'bot'; expected one of"),
        (msgs(("user", "q"), ("assistant", 5)), "messages[1].content must be a string, got a"),
        (msgs(("user", "q"), ("assistant", "  \t")), "messages[1].content is empty"),
        (msgs(("user", "q"), ("assistant", None)), "must be a string, got null"),
        (
            '{"messages": [{"role": "user", "content": "q", "name": "x"}]}',
            "messages[0] has unexpected key 'name'",
        ),
        (msgs(("assistant", "a")), "messages[0].role is 'assistant', expected 'user'"),
        (msgs(("user", "q"), ("user", "q2")), "messages[1].role is 'user', expected 'assistant'"),
        (
            msgs(("user", "q"), ("assistant", "a"), ("system", "s")),
            "a system message is only allowed first",
        ),
        (
            msgs(("user", "q"), ("assistant", "a"), ("user", "q")),
            "last message must be an assistant",
        ),
        (msgs(("system", "s")), "no user or assistant turn after the system message"),
        (msgs(("user", "q")), "last message must be an assistant"),
    ],
)
def test_each_kind_of_error_names_its_line(line: str, expected: str) -> None:
    with pytest.raises(DatasetError) as caught:
        parse_dataset(f"{GOOD}\n{GOOD}\n{line}\n{GOOD}\n", source="d.jsonl")
    issues = caught.value.issues
    assert [issue.line for issue in issues] == [3] * len(issues)
    assert any(expected in issue.message for issue in issues), issues
    assert caught.value.line == 3
    assert "d.jsonl" in str(caught.value) and "line 3:" in str(caught.value)


def test_all_errors_are_collected_in_file_order() -> None:
    text = "\n".join([GOOD, "{oops", GOOD, msgs(("user", "q"), ("assistant", "")), "[]"])
    with pytest.raises(DatasetError) as caught:
        parse_dataset(text)
    assert [issue.line for issue in caught.value.issues] == [2, 4, 5]
    assert "3 problems" in str(caught.value)


def test_one_line_can_have_several_problems() -> None:
    line = '{"messages": [{"role": "robot", "content": ""}], "extra": 1}'
    with pytest.raises(DatasetError) as caught:
        parse_dataset(line)
    messages = [issue.message for issue in caught.value.issues]
    assert len(messages) == 3
    assert {issue.line for issue in caught.value.issues} == {1}


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_empty_file_is_an_error_about_the_whole_file(content: bytes) -> None:
    with pytest.raises(DatasetError) as caught:
        parse_dataset(content)
    assert caught.value.line is None
    assert "empty" in caught.value.issues[0].message
    assert str(caught.value.issues[0]).startswith("file:")


def test_invalid_utf8_is_reported_on_its_line() -> None:
    with pytest.raises(DatasetError) as caught:
        parse_dataset(GOOD.encode() + b"\n" + b'{"messages": "\xff"}\n')
    assert caught.value.line == 2
    assert "UTF-8" in caught.value.issues[0].message


def test_crlf_line_endings_keep_line_numbers() -> None:
    with pytest.raises(DatasetError) as caught:
        parse_dataset(f"{GOOD}\r\n{GOOD}\r\n{{bad\r\n")
    assert caught.value.line == 3


# --- chat encoding ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))


def learned_text(tokenizer: object, messages: list[dict[str, str]]) -> list[str]:
    encoded = encode_chat(tokenizer, messages, max_length=1024)
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(encoded.input_ids, encoded.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]  # type: ignore[attr-defined]


def test_only_assistant_turns_are_learned(tokenizer: object) -> None:
    messages = [
        {"role": "system", "content": "Be a pirate."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Arr, matey!"},
        {"role": "user", "content": "Bye?"},
        {"role": "assistant", "content": "Fair winds!"},
    ]
    assert learned_text(tokenizer, messages) == [
        "Arr, matey!<|im_end|>\n",
        "Fair winds!<|im_end|>\n",
    ]
    encoded = encode_chat(tokenizer, messages, max_length=1024)
    full = tokenizer.apply_chat_template(messages, tokenize=False)  # type: ignore[attr-defined]
    assert tokenizer.decode(list(encoded.input_ids)) == full  # type: ignore[attr-defined]


def test_the_prompt_matches_what_the_server_renders(tokenizer: object) -> None:
    messages = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo."}]
    encoded = encode_chat(tokenizer, messages, max_length=1024)
    first_learned = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    prompt = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        messages[:1], tokenize=False, add_generation_prompt=True
    )
    assert tokenizer.decode(list(encoded.input_ids[:first_learned])) == prompt  # type: ignore[attr-defined]


def test_too_long_prompts_are_refused(tokenizer: object) -> None:
    messages = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(ChatEncodingError, match="no assistant token"):
        encode_chat(tokenizer, messages, max_length=20)
    full = encode_chat(tokenizer, messages, max_length=1024)
    prompt_len = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    cut = encode_chat(tokenizer, messages, max_length=prompt_len + 1)
    assert cut.input_ids == full.input_ids[: prompt_len + 1] and cut.trained_tokens == 1
