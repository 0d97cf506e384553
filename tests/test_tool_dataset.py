"""The tool-use data set: rendered exactly as the gateway renders tools, valid like the
persona sets, and disjoint from its held-out prompts."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

from adapters.tooling.dataset import load_dataset
from gateway.model_io.tool_format import TOOLS_INSTRUCTION, parse_calls, tools_text
from gateway.model_io.tool_set import ToolBounds, ToolSet
from gateway.protocol.tools import ChatTool
from loadtests import tool_dataset
from loadtests.tool_dataset import (
    FUNCTIONS,
    HELDOUT_FILE,
    PREAMBLES,
    TRAIN_FILE,
    load_heldout,
    tool_definitions,
)


def toolset(names: list[str]) -> ToolSet:
    tools = [ChatTool.model_validate(t) for t in tool_definitions(names)]
    result = ToolSet.of(tools, "auto", None, ToolBounds(128, 256 * 1024))
    assert result is not None
    return result


def offered_names(system: str) -> list[str]:
    """The functions a system text lists (the JSON lines after the instruction)."""
    _, _, listing = system.partition(TOOLS_INSTRUCTION + "\n")
    return [json.loads(line)["name"] for line in listing.splitlines()]


def test_the_files_are_what_the_generator_writes() -> None:
    assert TRAIN_FILE.read_text() == tool_dataset.training_jsonl()
    assert HELDOUT_FILE.read_text() == tool_dataset.heldout_jsonl()


def test_every_system_message_is_what_the_gateway_renders_for_its_tools() -> None:
    data = load_dataset(TRAIN_FILE)  # the persona sets' validation
    assert 40 <= len(data) <= 60
    for example in data:
        system = example.messages[0]
        assert system.role == "system"
        names = offered_names(system.content)
        assert 2 <= len(names) <= len(FUNCTIONS)
        rendered = tools_text(toolset(names))
        prefixes = {"" if p is None else f"{p}\n\n" for p in PREAMBLES}
        assert any(system.content == prefix + rendered for prefix in prefixes), example.line


def test_assistant_turns_are_valid_calls_or_text() -> None:
    data = load_dataset(TRAIN_FILE)
    calls = texts = multi_turn = 0
    for example in data:
        tools = toolset(offered_names(example.messages[0].content))
        turns = example.messages[1:]
        first = turns[1].content
        parsed = parse_calls(first, tools)
        if parsed is None:
            assert not first.lstrip().startswith("{"), example.line
            texts += 1
            assert len(turns) == 2
            continue
        calls += 1
        [call] = parsed
        schema = FUNCTIONS[call.name]["parameters"]
        Draft202012Validator(schema).validate(json.loads(call.arguments))
        if len(turns) > 2:
            multi_turn += 1
            assert turns[2].content.startswith(f"Result of {call.name}:\n")
            assert parse_calls(turns[3].content, tools) is None
    assert calls >= 30 and texts >= 8 and multi_turn >= 5


def test_the_held_out_prompts_are_not_trained_on() -> None:
    trained = {m.content for ex in load_dataset(TRAIN_FILE) for m in ex.messages}
    heldout = load_heldout()
    assert 20 <= len(heldout) <= 30
    assert not {h["question"] for h in heldout} & trained
    for item in heldout:
        if item["expected"] is not None:
            assert item["expected"] in item["tools"]
            properties = FUNCTIONS[item["expected"]]["parameters"]["properties"]
            assert set(item["arguments"]) | set(item["mentions"]) <= set(properties)
    assert sum(h["expected"] is None for h in heldout) >= 6
