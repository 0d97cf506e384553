"""Chat templates rendered the way Hugging Face ``transformers`` renders them, without it.

A model folder's chat template is Jinja code written for ``transformers``'
``apply_chat_template``; the text it produces decides the token ids the model sees, so
it must come out character for character as there. This module builds the same
environment (``transformers/utils/chat_template_utils.py``):

- ``ImmutableSandboxedEnvironment`` (a template cannot mutate its inputs or reach
  Python internals) with ``trim_blocks`` and ``lstrip_blocks``;
- the ``loopcontrols`` extension (``{% break %}``, ``{% continue %}``) and the
  ``{% generation %}`` block tag (rendered as its body: it only marks assistant text
  for training masks);
- a ``tojson`` filter that is ``json.dumps`` with ``ensure_ascii=False`` (Jinja's own
  escapes HTML characters), taking ``indent``, ``separators`` and ``sort_keys``;
- the globals ``raise_exception(message)`` and ``strftime_now(format)``;
- the variables ``messages``, ``tools``, ``documents``, ``add_generation_prompt`` and
  the tokenizer's named special tokens (``bos_token``, ``eos_token``, ...), with any
  extra keyword arguments of the call on top.

A folder with several named templates uses ``tool_use`` when tools are given and it
has one, else ``default`` (as ``transformers``' ``get_chat_template``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

TemplateSource = str | Mapping[str, str]
"""One template, or named templates (``default``, ``tool_use``, ...)."""


class ChatTemplateError(ValueError):
    """The template cannot render these messages: its own ``raise_exception``, an
    undefined name or a bad operation in its code, or a syntax error."""


class GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: renders its body unchanged.
    ``transformers`` uses it to find assistant text for training masks; for a prompt
    only the text matters."""

    tags = {"generation"}  # noqa: RUF012 - Jinja reads the class attribute

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        block = jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body)
        return block.set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    """``source`` compiled in ``transformers``' environment (kept: a gateway renders
    with one or two templates for its whole life)."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationBlock, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    try:
        return environment.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"the chat template does not compile: {exc}") from exc


def select_template(templates: TemplateSource | None, *, with_tools: bool) -> str:
    """The template to render: the only one, else ``tool_use`` (tools given) or
    ``default``."""
    if templates is None:
        raise ChatTemplateError("the model folder has no chat template")
    if isinstance(templates, str):
        return templates
    if with_tools and "tool_use" in templates:
        return templates["tool_use"]
    if "default" in templates:
        return templates["default"]
    raise ChatTemplateError(
        f"the model has several chat templates and none is 'default': {sorted(templates)}"
    )


TEMPLATE_CODE_ERRORS = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError)
"""What a template's own code raises on input it does not accept: its
``raise_exception`` (a ``TemplateError``), an undefined name, or an operation on a value
of the wrong kind (``'a' + 1``, ``int('x')``)."""


def render_chat(
    templates: TemplateSource | None,
    messages: Sequence[Mapping[str, Any]],
    *,
    special_tokens: Mapping[str, str] | None = None,
    add_generation_prompt: bool = False,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    **variables: Any,
) -> str:
    """``messages`` rendered with the chat template, as ``transformers``'
    ``apply_chat_template(..., tokenize=False)`` renders them. ``tools`` are JSON
    Schemas (OpenAI's ``{"type": "function", "function": {...}}`` objects), ``documents``
    dicts (``title``, ``text``); ``variables`` reach the template beside the special
    tokens and win over them. Raises ``ChatTemplateError``."""
    if not messages:
        raise ChatTemplateError("Cannot apply a chat template to an empty conversation.")
    if tools is not None and not all(isinstance(tool, Mapping) for tool in tools):
        raise ChatTemplateError("tools must be JSON Schema objects")
    if documents is not None and not all(isinstance(d, Mapping) for d in documents):
        raise ChatTemplateError("documents must be objects with 'title' and 'text'")
    template = compile_template(select_template(templates, with_tools=tools is not None))
    try:
        return template.render(
            **{**(special_tokens or {}), **variables},
            messages=messages,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
        )
    except TEMPLATE_CODE_ERRORS as exc:
        raise ChatTemplateError(str(exc)) from exc
