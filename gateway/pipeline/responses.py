"""``ResponsesEndpoint``: ``/v1/responses``'s part of the pipeline.

The request becomes a ``ChatCompletionRequest`` (instructions, the chain's earlier
turns, the input items, tools, ``text.format``), and a ``ChatEndpoint`` built from it
does the checks, the policy's sampling, retrieval and the prompt: one pipeline, one
way to render a conversation. Errors it raises about chat's parameters are renamed to
the Responses parameters they came from (``messages[3]`` -> ``input[2]``). What is this
endpoint's own: its refusals, the ``Response`` object, its typed stream events, and
keeping the response (``store``) for retrieval and ``previous_response_id``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from gateway.engine.interface import GenerationOutput
from gateway.errors import GatewayError, InvalidRequestError, UnsupportedParameterError
from gateway.model_io.generation_params import SamplingFields, refuse_unsupported
from gateway.model_io.tool_stream import CallExtractor
from gateway.pipeline.chat import ChatEndpoint
from gateway.pipeline.endpoint import Prepared, Rendered, RenderInput
from gateway.pipeline.merge import ChoiceAccumulator
from gateway.pipeline.response_events import ResponseEvents, StreamedItems
from gateway.pipeline.response_items import (
    chat_messages,
    chat_tool_choice,
    chat_tools,
    file_citations,
    input_items,
    output_items,
)
from gateway.protocol.chat import ChatCompletionRequest
from gateway.protocol.responses import (
    UNSUPPORTED_RESPONSES_PARAMS,
    IncompleteDetails,
    InputTokensDetails,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    Status,
)
from gateway.rag.grounding import RagPlan
from gateway.settings import LimitSettings, ResponsesSettings
from gateway.tenancy.directory import Route
from gateway.tenancy.policy import BoundedSampling, Policy, SamplingRequest
from gateway.tenancy.response_store import ResponseStore, StoredResponse

logger = logging.getLogger(__name__)

# Chat's parameter names in errors -> the Responses parameter they came from.
RENAMED = {
    "max_completion_tokens": "max_output_tokens",
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
    "messages": "input",
}
MESSAGE_PARAM = re.compile(r"^messages\[(\d+)\]")


class ResponsesEndpoint:
    name = "responses"
    id_prefix = "resp"
    default_max_tokens: int | None = None
    n = 1

    def __init__(
        self,
        request: ResponsesRequest,
        *,
        owner: str,
        store: ResponseStore,
        settings: ResponsesSettings,
        previous: StoredResponse | None = None,
    ) -> None:
        """``previous``: the stored response ``previous_response_id`` names (the route
        loads it, off the event loop, and answers 404 when there is none)."""
        self.request = request
        self.model = request.model
        self.user = request.user
        self.stream = bool(request.stream)
        self.max_tokens = request.max_output_tokens
        self._owner = owner
        self._store = store
        self._settings = settings
        self._history = previous.turns() if previous is not None else []
        self._items: list[dict[str, Any]] = []
        self._origins: list[str] = []
        self._chat: ChatEndpoint | None = None
        self._unsaved: StoredResponse | None = None

    @property
    def chat(self) -> ChatEndpoint:
        assert self._chat is not None, "check() builds the chat request"
        return self._chat

    # ------------------------------------------------------------------ checks

    def check(self, limits: LimitSettings) -> None:
        r = self.request
        _refuse_non_defaults(r)
        if r.stream_options is not None and not r.stream:
            raise InvalidRequestError(
                "stream_options is only allowed when stream is true.", param="stream_options"
            )
        fmt = r.text.format if r.text else None
        if fmt is not None and fmt.type == "json_schema" and fmt.schema_ is None:
            raise InvalidRequestError(
                "text.format of type 'json_schema' needs a schema.", param="text.format.schema"
            )
        self._items = input_items(r.input, limits.max_messages)
        if r.stored:
            self._check_stored_size()
        messages, self._origins = chat_messages(r.instructions, self._history, self._items)
        tools = chat_tools(r.tools)
        fields: dict[str, Any] = {
            "model": r.model,
            "messages": messages,
            "temperature": r.temperature,
            "top_p": r.top_p,
            "max_completion_tokens": r.max_output_tokens,
            "stream": r.stream,
            "response_format": r.text.format.response_format()
            if r.text and r.text.format
            else None,
            "user": r.user,
            "safety_identifier": r.safety_identifier,
            "prompt_cache_key": r.prompt_cache_key,
            "rag": r.rag,
        }
        if tools is not None:  # without tools, tool_choice and parallel_tool_calls say nothing
            fields["tools"] = tools
            fields["tool_choice"] = chat_tool_choice(r.tool_choice)
            fields["parallel_tool_calls"] = r.parallel_tool_calls
        with self._renamed():
            try:
                chat = ChatCompletionRequest.model_validate(fields)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
                raise InvalidRequestError(
                    f"Invalid value: {first['msg']}.", param=where.lstrip(".")
                ) from None
            self._chat = ChatEndpoint(chat)
            self._chat.check(limits)

    def _check_stored_size(self) -> None:
        size = len(StoredResponse("", "", 0, {}, self._items, self._history).body().encode())
        if size > self._settings.max_stored_bytes:
            raise InvalidRequestError(
                f"This conversation is too long to store ({size} bytes of input and earlier "
                f"turns; at most {self._settings.max_stored_bytes}). Send it with store: false.",
                param="previous_response_id" if self._history else "input",
            )

    def check_route(self, route: Route) -> None:
        with self._renamed():
            self.chat.check_route(route)

    def sampling(self) -> SamplingRequest:
        return replace(self.chat.sampling(), max_tokens_param="max_output_tokens")

    def rag_plan(self, policy: Policy) -> RagPlan | None:
        with self._renamed():
            return self.chat.rag_plan(policy)

    def query(self) -> str:
        return self.chat.query()

    def prompt_param(self) -> str:
        return "input"

    def prompt_chars(self) -> int:
        return self.chat.prompt_chars()

    def longest_prompt_chars(self) -> int:
        return self.chat.prompt_chars()

    def render(self, work: RenderInput) -> Rendered:
        with self._renamed():
            return self.chat.render(work)

    def sampling_fields(self, bounded: BoundedSampling) -> SamplingFields:
        with self._renamed():
            fields = self.chat.sampling_fields(bounded)
        return replace(fields, max_tokens_param="max_output_tokens")

    @contextmanager
    def _renamed(self) -> Iterator[None]:
        """Chat's errors, naming the Responses parameter each came from."""
        try:
            yield
        except InvalidRequestError as exc:
            param = self._responses_param(exc.param)
            if param != exc.param and exc.param is not None and param is not None:
                exc.message = exc.message.replace(exc.param, param)
                exc.args = (exc.message,)
                exc.param = param
            raise

    def _responses_param(self, param: str | None) -> str | None:
        if param is None:
            return None
        m = MESSAGE_PARAM.match(param)
        if m is not None:  # the item (chat's own sub-fields name nothing in Responses)
            k = int(m.group(1))
            return self._origins[k] if k < len(self._origins) else "input"
        if param.startswith(("tools[", "tool_choice")):  # chat nests what Responses flattens
            return param.replace(".function.", ".").replace(".function", "")
        head, dot, rest = param.partition(".")
        return RENAMED.get(head, head) + dot + rest

    # -------------------------------------------------------------- the response

    def response_body(self, prepared: Prepared, outputs: ChoiceAccumulator) -> str:
        (choice,) = outputs.choices(0)
        calls = CallExtractor(self.chat.tools)
        calls.feed(choice.text)
        calls.finish()
        response = self._final(prepared, calls, choice.finish_reason)
        self._unsaved = self._record(prepared, response)
        return response.model_dump_json()

    async def save(self) -> None:
        """Store a non-streamed response (the route calls it once the body is built;
        a streamed one is stored before its terminal event)."""
        record, self._unsaved = self._unsaved, None
        if record is not None:
            await asyncio.to_thread(self._store.put, record)

    async def events(
        self, prepared: Prepared, outputs: AsyncIterator[tuple[int, GenerationOutput]]
    ) -> AsyncIterator[str]:
        """created and in_progress; then per piece of output (``CallExtractor``: text,
        or tool calls once told apart) its item's added events and its deltas; then each
        item's done events and the terminal event.

        The first events go out with the engine's first output (a failure before it is
        a plain HTTP error, as on chat); a failure after it is ``response.failed``.
        """
        stream = aiter(outputs)
        first = await anext(stream, None)
        events = ResponseEvents()
        started = self._response(prepared, "in_progress")
        yield events.response("response.created", started) + events.response(
            "response.in_progress", started
        )
        try:
            items = StreamedItems(events, item_key(prepared))
            calls = CallExtractor(self.chat.tools)
            finish: str | None = None
            async for out in _from_first(first, stream):
                for c in out.choices:
                    pieces = calls.feed(c.text)
                    if c.finish_reason:
                        finish = c.finish_reason
                        pieces += calls.finish()
                    sent = "".join(items.piece(piece) for piece in pieces)
                    if sent:
                        yield sent
            response = self._final(prepared, calls, finish)
            yield items.close(response.output)
            record = self._record(prepared, response)
            if record is not None:
                await asyncio.to_thread(self._store.put, record)
            yield events.finished(response)
        except GatewayError as exc:
            error = ResponseError(code="server_error", message=exc.message)
            yield events.finished(self._response(prepared, "failed", error=error))
        except Exception:
            logger.exception("response %s failed", response_id(prepared))
            error = ResponseError(code="server_error", message="The server failed.")
            yield events.finished(self._response(prepared, "failed", error=error))

    def _final(
        self, prepared: Prepared, calls: CallExtractor, finish: str | None
    ) -> ResponseObject:
        incomplete = finish == "length"
        items = output_items(
            item_key(prepared),
            calls.text,
            calls.calls,
            file_citations(calls.text, prepared.rendered.citations),
            incomplete=incomplete,
        )
        u = prepared.usage()
        cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
        return self._response(
            prepared,
            "incomplete" if incomplete else "completed",
            output=items,
            usage=ResponseUsage(
                input_tokens=u.prompt_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=cached),
                output_tokens=u.completion_tokens,
                total_tokens=u.total_tokens,
            ),
            incomplete_details=IncompleteDetails(reason="max_output_tokens")
            if incomplete
            else None,
            completed_at=int(time.time()),
        )

    def _response(self, prepared: Prepared, status: Status, **fields: Any) -> ResponseObject:
        r = self.request
        fmt = r.text.format.echoed() if r.text and r.text.format else {"type": "text"}
        return ResponseObject(
            id=response_id(prepared),
            created_at=prepared.created,
            status=status,
            instructions=r.instructions,
            max_output_tokens=r.max_output_tokens,
            model=prepared.model,
            parallel_tool_calls=r.parallel_tool_calls is not False,
            previous_response_id=r.previous_response_id,
            store=r.stored,
            temperature=1.0 if r.temperature is None else r.temperature,
            top_p=1.0 if r.top_p is None else r.top_p,
            text={"format": fmt},
            tool_choice=r.tool_choice or "auto",
            tools=[_tool_echo(t) for t in r.tools or ()],
            user=r.user,
            metadata=r.metadata or {},
            **fields,
        )

    def _record(self, prepared: Prepared, response: ResponseObject) -> StoredResponse | None:
        if not self.request.stored:
            return None
        return StoredResponse(
            id=response.id,
            owner=self._owner,
            created_at=float(prepared.created),
            response=response.model_dump(mode="json"),
            input_items=self._items,
            history=self._history,
        )


async def _from_first(
    first: tuple[int, GenerationOutput] | None,
    rest: AsyncIterator[tuple[int, GenerationOutput]],
) -> AsyncIterator[GenerationOutput]:
    if first is None:
        return
    yield first[1]
    async for _, out in rest:
        yield out


def item_key(prepared: Prepared) -> str:
    """The hex of the pipeline's request id (``resp-<hex>``): the response's and its
    items' ids are made from it."""
    return prepared.id.partition("-")[2]


def response_id(prepared: Prepared) -> str:
    return f"resp_{item_key(prepared)}"


def _tool_echo(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the response object repeats it (every key OpenAI sends)."""
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict", True),
    }


def _refuse_non_defaults(r: ResponsesRequest) -> None:
    refuse_unsupported(r, UNSUPPORTED_RESPONSES_PARAMS)
    if r.background:
        raise UnsupportedParameterError("background", "responses are generated in the request")
    if r.truncation not in (None, "disabled"):
        raise UnsupportedParameterError("truncation", "only 'disabled' is available")
    if r.include:
        raise UnsupportedParameterError("include", f"{r.include[0]!r} is not available")
    if r.service_tier not in (None, "auto", "default"):
        raise UnsupportedParameterError("service_tier")
    if r.text is not None and r.text.verbosity not in (None, "medium"):
        raise UnsupportedParameterError("text.verbosity")
