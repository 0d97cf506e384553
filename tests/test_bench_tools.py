"""How the tool-call benchmark scores an answer (no engine: replies as the API sends them)."""

from __future__ import annotations

import json
from typing import Any

from loadtests.bench_tools import body, score, table
from loadtests.tool_dataset import load_heldout


def reply(*calls: tuple[str, Any], text: str | None = None) -> dict[str, Any]:
    tool_calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": args if isinstance(args, str) else json.dumps(args),
            },
        }
        for i, (name, args) in enumerate(calls)
    ]
    message = {"role": "assistant", "content": text, "tool_calls": tool_calls or None}
    finish = "length" if any(isinstance(a, str) for _, a in calls) else "stop"
    return {"choices": [{"message": message, "finish_reason": finish}]}


def item(question: str) -> dict[str, Any]:
    return next(h for h in load_heldout() if h["question"] == question)


def test_right_function_and_arguments() -> None:
    order = item("Can you tell me where order BP-55530 is?")
    request = body(order, "toolcaller", "auto", 64)
    assert request["tool_choice"] == "auto" and request["messages"][-1]["role"] == "user"
    assert {t["function"]["name"] for t in request["tools"]} == set(order["tools"])
    good = score(order, "m", "auto", reply(("get_order_status", {"order_id": "bp-55530 "})), 1.0)
    assert good.called == "get_order_status" and good.valid and good.right_arguments
    wrong_id = score(order, "m", "auto", reply(("get_order_status", {"order_id": "BP-5553"})), 1)
    assert wrong_id.valid and not wrong_id.right_arguments
    wrong_fn = score(order, "m", "auto", reply(("cancel_order", {"order_id": "BP-55530"})), 1)
    assert wrong_fn.called == "cancel_order" and not wrong_fn.right_arguments
    invalid = score(order, "m", "auto", reply(("get_order_status", {"id": "BP-55530"})), 1)
    assert not invalid.valid and not invalid.right_arguments
    text = score(order, "m", "auto", reply(text="Let me check."), 1)
    assert text.called is None and not text.valid


def test_free_text_arguments_must_mention_the_expected_word() -> None:
    smoke = item("Urgent: smoke is coming out of my coffee machine!")
    ok = {"subject": "Smoke from the machine", "priority": "high"}
    assert score(smoke, "m", "auto", reply(("open_ticket", ok)), 1).right_arguments
    low = {"subject": "Smoke from the machine", "priority": "low"}
    assert not score(smoke, "m", "auto", reply(("open_ticket", low)), 1).right_arguments
    vague = {"subject": "Machine problem", "priority": "high"}
    assert not score(smoke, "m", "auto", reply(("open_ticket", vague)), 1).right_arguments


def test_the_table_counts_text_answers_where_no_function_fits() -> None:
    greeting, order = item("Good morning!"), item("Can you tell me where order BP-55530 is?")
    outcomes = [
        score(greeting, "m", "auto", reply(text="Good morning!"), 1),
        score(order, "m", "auto", reply(("get_order_status", {"order_id": "BP-55530"})), 1),
        score(greeting, "m", "required", reply(("get_weather", {"city": "x"})), 1),
        score(order, "m", "required", reply(("get_order_status", "{not json")), 1),
    ]
    rows = table(outcomes, ["m"]).splitlines()
    required = "| m | required | 1/2 (50%) | 1/1 (100%) | 0/1 (0%) | (a call is forced) | - | 1 |"
    auto = "| m | auto | 1/1 (100%) | 1/1 (100%) | 1/1 (100%) | 1/1 (100%) | 2/2 (100%) | 0 |"
    assert rows[2:] == [required, auto]
