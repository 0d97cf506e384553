"""The fallback tool format's parser, held to vLLM's ``llama3_json`` parser (the format's
reference reader) on every output both read as calls, and stricter where it must be."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.model_io.tool_format import call_text, parse_calls, tools_text
from gateway.model_io.tool_set import ToolBounds, ToolSet
from gateway.protocol.tools import ChatTool

TOOLS = [
    ChatTool.model_validate(
        {
            "type": "function",
            "function": {
                "name": name,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    )
    for name in ("search", "lookup")
]
BOUNDS = ToolBounds(max_tools=8, max_definition_bytes=65536)


def toolset(**kwargs: Any) -> ToolSet:
    made = ToolSet.of(TOOLS, kwargs.get("choice"), kwargs.get("parallel"), BOUNDS)
    assert made is not None
    return made


CALL_OUTPUTS = [
    '{"name": "search", "parameters": {"q": "reset"}}',
    '  {"name": "search", "arguments": {"q": "naïve"}}  ',
    '<|python_tag|>{"name": "lookup", "parameters": {}}',
    '{"name": "search", "parameters": {"q": "a"}}; {"name": "lookup", "parameters": {"q": "b"}}',
    '{"name": "search", "parameters": {"q": "{nested}"}}',
]


class _Vocab:
    """Just what vLLM's parser asks of a tokenizer: its vocabulary."""

    def get_vocab(self) -> dict[str, int]:
        return {"<|python_tag|>": 1}


@pytest.mark.integration  # imports vLLM (seconds), which runs `file` on its first import
@pytest.mark.parametrize("output", CALL_OUTPUTS)
def test_same_calls_as_vllms_llama3_json_parser(output: str) -> None:
    from vllm.tool_parsers.llama_tool_parser import Llama3JsonToolParser

    reference = Llama3JsonToolParser(_Vocab()).extract_tool_calls(output, None)  # type: ignore[arg-type]
    assert reference.tools_called
    ours = parse_calls(output, toolset())
    assert ours is not None
    assert [(c.name, json.loads(c.arguments)) for c in ours] == [
        (c.function.name, json.loads(c.function.arguments)) for c in reference.tool_calls
    ]


@pytest.mark.parametrize(
    "output",
    [
        'Sure! {"name": "search", "parameters": {"q": "x"}}',  # vLLM drops the prose; we keep text
        '{"name": "search", "parameters": {"q": "x"}} Done.',
        '{"name": "delete_all", "parameters": {}}',
        '{"name": "search", "parameters": "not json"}',
        '{"name": "search", "parameters": [1]}',
        '{"name": "search", "parameters": {"q": ',
        "[]",
        "",
    ],
)
def test_anything_but_calls_is_text(output: str) -> None:
    assert parse_calls(output, toolset()) is None


def test_hermes_wrappers_and_arrays_are_read() -> None:
    out = '<tool_call>\n{"name": "search", "arguments": {"q": "x"}}\n</tool_call>'
    assert [c.name for c in parse_calls(out, toolset()) or []] == ["search"]
    both = '[{"name": "search", "parameters": {}}, {"name": "lookup", "parameters": {}}]'
    assert [c.name for c in parse_calls(both, toolset()) or []] == ["search", "lookup"]
    assert parse_calls(both, toolset(parallel=False)) is None


def test_rendered_calls_parse_back() -> None:
    text = "\n".join(
        [call_text("search", '{"q": "a"}'), call_text("lookup", "{}"), call_text("lookup", "")]
    )
    calls = parse_calls(text, toolset())
    assert calls is not None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("search", {"q": "a"}),
        ("lookup", {}),
        ("lookup", {}),
    ]
    listing = tools_text(toolset())
    assert '"name": "search"' in listing and '"name": "lookup"' in listing
