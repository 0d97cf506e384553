"""The fallback tool format: how tools reach a model whose chat template takes none,
and how its calls are read back.

The format is Llama 3.1's JSON tool calling, the one vLLM's ``llama3_json`` parser
reads: the functions are listed as JSON in the system text, and a call is a bare JSON
object ``{"name": ..., "parameters": {...}}`` (several: one per line, or separated by
``;``). vLLM's parser itself cannot be used here: it needs Llama's ``<|python_tag|>``
token in the vocabulary and vLLM in the gateway's process (a remote-mode gateway has
neither); ``tests/test_tool_format.py`` holds this parser to vLLM's on the outputs both
read. Hermes-style ``<tool_call>...</tool_call>`` wrappers and an ``arguments`` key are
read too, so models trained on either format work in ``auto``.

An output is a call only when it is nothing but calls; anything else (prose around a
JSON object, an unknown function, arguments that are not an object or, for a strict
function, do not match its schema) is returned as text, never as an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gateway.model_io.tool_set import ToolSet

TOOLS_INSTRUCTION = (
    "You can call functions. To call one, answer with only a JSON object of the form "
    '{"name": "<function name>", "parameters": {<arguments>}}; to call several, put one '
    "such object on each line. When no function is needed, answer in plain text.\n"
    "The functions, with their parameters as JSON Schema:"
)
CALL_PREFIXES = ("<|python_tag|>", "<tool_call>")
CALL_SUFFIX = "</tool_call>"
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str
    """The arguments object as compact JSON text."""


def tools_text(tools: ToolSet) -> str:
    """The system text that lists the functions (appended to the system message)."""
    lines = [TOOLS_INSTRUCTION]
    for f in tools.functions.values():
        entry: dict[str, object] = {"name": f.name}
        if f.definition.description:
            entry["description"] = f.definition.description
        entry["parameters"] = f.schema
        lines.append(json.dumps(entry, ensure_ascii=False))
    return "\n".join(lines)


def call_text(name: str, arguments: str) -> str:
    """One call of an assistant turn as the model writes it."""
    try:
        parameters = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        parameters = arguments  # shown as sent: the model sees what it (or the client) said
    return json.dumps({"name": name, "parameters": parameters}, ensure_ascii=False)


def result_text(name: str | None, content: str) -> str:
    """A tool turn's content, as the user turn that carries it back."""
    return f"Result of {name}:\n{content}" if name else f"Function result:\n{content}"


def might_be_call(head: str) -> bool:
    """Whether an output starting with ``head`` (leading spaces removed) may still be
    calls: a JSON object or array, or a prefix of a call tag."""
    if not head:
        return True
    if head[0] in "{[":
        return True
    return any(p.startswith(head) or head.startswith(p) for p in CALL_PREFIXES)


def parse_calls(text: str, tools: ToolSet) -> list[ParsedCall] | None:
    """The calls ``text`` consists of, or None when it is (also) something else."""
    rest = text.strip()
    for prefix in CALL_PREFIXES:
        rest = rest.removeprefix(prefix).lstrip()
    objects: list[object] = []
    while rest:
        rest = rest.removesuffix(CALL_SUFFIX).strip()
        for prefix in CALL_PREFIXES:
            rest = rest.removeprefix(prefix).lstrip()
        if not rest:
            break
        try:
            value, end = _DECODER.raw_decode(rest)
        except ValueError:
            return None
        objects.extend(value if isinstance(value, list) else [value])
        rest = rest[end:].lstrip().removesuffix(CALL_SUFFIX).lstrip().lstrip(";,").lstrip()
    calls = [_call(o, tools) for o in objects]
    if not calls or any(c is None for c in calls):
        return None
    if not tools.parallel and len(calls) > 1:
        return None
    return [c for c in calls if c is not None]


def _call(value: object, tools: ToolSet) -> ParsedCall | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    function = tools.functions.get(value["name"])
    if function is None or (tools.named is not None and function.name != tools.named):
        return None
    arguments = value.get("parameters", value.get("arguments", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON text
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not function.accepts(arguments):
        return None
    return ParsedCall(function.name, json.dumps(arguments, ensure_ascii=False))
