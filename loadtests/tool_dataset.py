"""The demo's tool-use data: a support bot's functions, the conversations the
``toolcaller`` adapter is trained on, and held-out prompts to measure it with.

``python -m loadtests.tool_dataset`` writes ``adapters/tooling/data/tools.jsonl`` (training, the
persona sets' format: ``{"messages": [...]}``) and ``adapters/tooling/data/tools-heldout.jsonl``
(one prompt per line with its tools and the expected call, or none). Each conversation
is rendered exactly as the gateway renders a request with those tools: the functions in
the system text by ``tools_text`` (after the client's own system text, if any), a call
as ``call_text``, a tool's result as the user turn ``result_text`` makes. The generator
lives here, not in ``adapters``, because that rendering is the gateway's and
``adapters`` never imports ``gateway``; ``tests/test_tool_dataset.py`` checks the files
are what this module writes.

Every example offers a seeded random subset of the functions (the one it calls always
among them, in a shuffled order), so the model learns to read the list rather than one
fixed prompt; some questions are in German, French or Spanish; some need no function
(or the one they would need is not offered) and are answered in plain text.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.tooling.demo_kit import DATA_DIR
from gateway.model_io.tool_format import call_text, result_text, tools_text
from gateway.model_io.tool_set import ToolBounds, ToolSet
from gateway.protocol.tools import ChatTool

TRAIN_FILE = DATA_DIR / "tools.jsonl"
HELDOUT_FILE = DATA_DIR / "tools-heldout.jsonl"

_ORDER_ID = {"type": "string", "description": "The order number, e.g. BP-12345"}
FUNCTIONS: dict[str, dict[str, Any]] = {
    "get_order_status": {
        "description": "Look up where a customer's order is.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": _ORDER_ID},
            "required": ["order_id"],
        },
    },
    "cancel_order": {
        "description": "Cancel an order that has not shipped yet.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": _ORDER_ID},
            "required": ["order_id"],
        },
    },
    "open_ticket": {
        "description": "Open a support ticket for a problem a technician must handle.",
        "parameters": {
            "type": "object",
            "properties": {
                "subject": {"type": "string"},
                "priority": {"type": "string", "enum": ["low", "normal", "high"]},
            },
            "required": ["subject", "priority"],
        },
    },
    "search_manual": {
        "description": "Search the coffee machine's manual.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
    "get_weather": {
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
PREAMBLES = (
    None,
    "You are the support assistant of Acme Home Appliances.",
    "You are a helpful support bot. Keep answers short.",
)
HELDOUT_PREAMBLE = (
    "You are the customer support assistant of Acme Home Appliances for the BrewPilot "
    "BP-300 coffee machine."
)


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None
    """The function's result, for a conversation that goes on after the call."""
    answer: str | None = None
    """The assistant's answer to the result."""


@dataclass(frozen=True)
class Example:
    """One question and what the assistant does: a ``Call`` or a plain-text answer."""

    question: str
    reply: Call | str
    absent: tuple[str, ...] = ()
    """Functions this example must not offer (a question whose function is missing)."""


@dataclass(frozen=True)
class HeldOut:
    """A held-out prompt; ``expected`` None: no function fits, the answer is text."""

    question: str
    expected: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    """Arguments that must have exactly these values (strings compared case-blind)."""
    mentions: dict[str, str] = field(default_factory=dict)
    """Free-text arguments that must contain this text (case-blind)."""
    absent: tuple[str, ...] = ()


def _c(name: str, **arguments: Any) -> Call:
    return Call(name, arguments)


def _m(name: str, arguments: dict[str, Any], result: dict[str, Any], answer: str) -> Call:
    return Call(name, arguments, result, answer)


_S, _T = "search_manual", "open_ticket"
TRAINING: tuple[Example, ...] = (
    Example("Where is my order BP-48213?", _c("get_order_status", order_id="BP-48213")),
    Example(
        "Can you check the status of order BP-10577 for me?",
        _c("get_order_status", order_id="BP-10577"),
    ),
    Example("Has order BP-93320 shipped yet?", _c("get_order_status", order_id="BP-93320")),
    Example(
        "hi, order number BP-70442, when will it arrive?",
        _c("get_order_status", order_id="BP-70442"),
    ),
    Example("Wo ist meine Bestellung BP-22871?", _c("get_order_status", order_id="BP-22871")),
    Example("Où en est ma commande BP-66104 ?", _c("get_order_status", order_id="BP-66104")),
    Example("¿Dónde está mi pedido BP-35019?", _c("get_order_status", order_id="BP-35019")),
    Example("Please cancel order BP-51876.", _c("cancel_order", order_id="BP-51876")),
    Example(
        "I changed my mind, cancel my order BP-20931.", _c("cancel_order", order_id="BP-20931")
    ),
    Example(
        "I ordered BP-88412 by mistake, can you cancel it?", _c("cancel_order", order_id="BP-88412")
    ),
    Example(
        "Bitte stornieren Sie meine Bestellung BP-31755.", _c("cancel_order", order_id="BP-31755")
    ),
    Example("Je veux annuler la commande BP-47290.", _c("cancel_order", order_id="BP-47290")),
    Example("Quiero cancelar el pedido BP-60128.", _c("cancel_order", order_id="BP-60128")),
    Example(
        "My BP-300 leaks water every morning, I need someone to look at it.",
        _c(_T, subject="BP-300 leaks water", priority="normal"),
    ),
    Example(
        "URGENT: the machine sparks when I switch it on!",
        _c(_T, subject="Machine sparks when switched on", priority="high"),
    ),
    Example(
        "I was charged twice for my last order, please have someone fix it.",
        _c(_T, subject="Charged twice for an order", priority="normal"),
    ),
    Example(
        "The grinder makes a loud noise, can you open a ticket?",
        _c(_T, subject="Grinder makes a loud noise", priority="normal"),
    ),
    Example(
        "Meine Maschine zeigt Fehler E07 und startet nicht mehr. Dringend!",
        _c(_T, subject="Fehler E07, Maschine startet nicht", priority="high"),
    ),
    Example(
        "Ma machine ne chauffe plus, pouvez-vous ouvrir un ticket ?",
        _c(_T, subject="La machine ne chauffe plus", priority="normal"),
    ),
    Example(
        "La pantalla de mi cafetera no enciende, necesito un técnico.",
        _c(_T, subject="La pantalla no enciende", priority="normal"),
    ),
    Example("How do I descale the BP-300?", _c(_S, query="descale")),
    Example("What does error E04 mean?", _c(_S, query="error E04")),
    Example("How do I change the water filter?", _c(_S, query="change water filter")),
    Example("How much coffee should I use for one cup?", _c(_S, query="coffee amount per cup")),
    Example("Wie stelle ich die Mahlstufe ein?", _c(_S, query="Mahlstufe einstellen")),
    Example("Comment nettoyer la buse à lait ?", _c(_S, query="nettoyer la buse à lait")),
    Example("¿Cómo programo el apagado automático?", _c(_S, query="apagado automático")),
    Example("What's the weather in Berlin?", _c("get_weather", city="Berlin")),
    Example("Is it raining in London right now?", _c("get_weather", city="London")),
    Example(
        "Weather in Chicago in fahrenheit please.",
        _c("get_weather", city="Chicago", unit="fahrenheit"),
    ),
    Example("Wie ist das Wetter in München?", _c("get_weather", city="München")),
    Example("Quel temps fait-il à Lyon ?", _c("get_weather", city="Lyon")),
    Example(
        "¿Qué tiempo hace en Madrid en grados Celsius?",
        _c("get_weather", city="Madrid", unit="celsius"),
    ),
    Example("Hello!", "Hello! How can I help you today?"),
    Example("Thanks, that's all.", "You're welcome! Have a nice day."),
    Example("What is the capital of Italy?", "The capital of Italy is Rome."),
    Example(
        "Can you write a short poem about coffee?",
        "Dark and warm, the morning cup,\nit wakes the world and lifts me up.",
    ),
    Example("What is 12 times 4?", "12 times 4 is 48."),
    Example("Who are you?", "I am a support assistant. How can I help you?"),
    Example("Danke schön!", "Gern geschehen! Kann ich sonst noch helfen?"),
    Example("Bonjour !", "Bonjour ! Comment puis-je vous aider ?"),
    Example("¿Cuál es la capital de Francia?", "La capital de Francia es París."),
    Example(
        "What's the weather in Rome?",
        "Sorry, I cannot check the weather here.",
        absent=("get_weather",),
    ),
    Example(
        "Where is my order BP-45521?",
        "Sorry, I cannot look up orders here. Your confirmation email has a tracking link.",
        absent=("get_order_status",),
    ),
    Example(
        "Where is my order BP-39017?",
        _m(
            "get_order_status",
            {"order_id": "BP-39017"},
            {"status": "shipped", "delivery": "2026-12-09"},
            "Your order BP-39017 has shipped and should arrive on 2026-12-09.",
        ),
    ),
    Example(
        "Cancel my order BP-77120, please.",
        _m(
            "cancel_order",
            {"order_id": "BP-77120"},
            {"cancelled": True},
            "Done: order BP-77120 is cancelled.",
        ),
    ),
    Example(
        "The steam wand of my BP-300 is blocked, I need help.",
        _m(
            _T,
            {"subject": "Steam wand blocked", "priority": "normal"},
            {"ticket": "T-5521"},
            "I opened ticket T-5521. A technician will contact you soon.",
        ),
    ),
    Example(
        "How do I clean the brew unit?",
        _m(
            _S,
            {"query": "clean brew unit"},
            {"results": ["Remove the brew unit, rinse it under warm water and let it dry."]},
            "Take out the brew unit, rinse it under warm water and let it dry.",
        ),
    ),
    Example(
        "What's the weather in Paris?",
        _m(
            "get_weather",
            {"city": "Paris"},
            {"temperature": 7, "unit": "celsius", "sky": "cloudy"},
            "It is 7 °C and cloudy in Paris.",
        ),
    ),
    Example(
        "Ist meine Bestellung BP-28406 unterwegs?",
        _m(
            "get_order_status",
            {"order_id": "BP-28406"},
            {"status": "processing", "delivery": "2026-12-14"},
            "Ihre Bestellung BP-28406 wird bearbeitet und kommt voraussichtlich am 2026-12-14.",
        ),
    ),
    Example(
        "¿Qué tiempo hace en Valencia?",
        _m(
            "get_weather",
            {"city": "Valencia"},
            {"temperature": 18, "unit": "celsius", "sky": "sunny"},
            "En Valencia hace 18 °C y está soleado.",
        ),
    ),
)

HELDOUT: tuple[HeldOut, ...] = (
    HeldOut(
        "Can you tell me where order BP-55530 is?", "get_order_status", {"order_id": "BP-55530"}
    ),
    HeldOut(
        "What's the status of my order BP-81204?", "get_order_status", {"order_id": "BP-81204"}
    ),
    HeldOut(
        "Ist meine Bestellung BP-40096 schon verschickt?",
        "get_order_status",
        {"order_id": "BP-40096"},
    ),
    HeldOut("¿Ya salió mi pedido BP-12673?", "get_order_status", {"order_id": "BP-12673"}),
    HeldOut("Cancel order BP-90317 please.", "cancel_order", {"order_id": "BP-90317"}),
    HeldOut(
        "Annulez ma commande BP-24458, s'il vous plaît.", "cancel_order", {"order_id": "BP-24458"}
    ),
    HeldOut(
        "Ich möchte die Bestellung BP-63381 stornieren.", "cancel_order", {"order_id": "BP-63381"}
    ),
    HeldOut(
        "The water tank of my machine is cracked, please open a ticket.",
        _T,
        {"priority": "normal"},
        {"subject": "tank"},
    ),
    HeldOut(
        "Urgent: smoke is coming out of my coffee machine!",
        _T,
        {"priority": "high"},
        {"subject": "smoke"},
    ),
    HeldOut(
        "Mon moulin est bloqué, j'ai besoin d'un technicien.",
        _T,
        {"priority": "normal"},
        {"subject": "moulin"},
    ),
    HeldOut("How do I reset the machine to factory settings?", _S, {}, {"query": "reset"}),
    HeldOut("What does the blinking red light mean?", _S, {}, {"query": "light"}),
    HeldOut("¿Cómo limpio el depósito de agua?", _S, {}, {"query": "depósito"}),
    HeldOut("Wie entkalke ich die Maschine?", _S, {}, {"query": "entkalk"}),
    HeldOut("What's the weather like in Vienna?", "get_weather", {"city": "Vienna"}),
    HeldOut(
        "Is it cold in Toronto today? Answer in fahrenheit.",
        "get_weather",
        {"city": "Toronto", "unit": "fahrenheit"},
    ),
    HeldOut("Quel temps fait-il à Marseille ?", "get_weather", {"city": "Marseille"}),
    HeldOut("¿Qué tiempo hace en Sevilla?", "get_weather", {"city": "Sevilla"}),
    HeldOut("Good morning!", None),
    HeldOut("What is the capital of Spain?", None),
    HeldOut("Merci beaucoup, bonne journée !", None),
    HeldOut("How many minutes are in two hours?", None),
    HeldOut("Tell me a joke about coffee.", None),
    HeldOut("Wer bist du?", None),
    HeldOut("What's the weather in Oslo?", None, absent=("get_weather",)),
    HeldOut("Where is my order BP-70815?", None, absent=("get_order_status",)),
)


def tool_definitions(names: list[str]) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` entries for ``names``, in that order."""
    return [{"type": "function", "function": {"name": n, **FUNCTIONS[n]}} for n in names]


def system_text(names: list[str], preamble: str | None) -> str:
    """The system message the gateway renders for these tools after ``preamble`` (the
    client's system text, or none)."""
    tools = [ChatTool.model_validate(t) for t in tool_definitions(names)]
    toolset = ToolSet.of(tools, "auto", None, ToolBounds(len(tools), 1 << 20))
    assert toolset is not None
    text = tools_text(toolset)
    return f"{preamble}\n\n{text}" if preamble else text


def offered(seed: int, needed: str | None, absent: tuple[str, ...]) -> list[str]:
    """2 to 5 functions in a shuffled order: ``needed`` always, ``absent`` never."""
    rng = random.Random(seed)
    others = [n for n in FUNCTIONS if n != needed and n not in absent]
    rng.shuffle(others)
    count = rng.randint(2, min(5, len(others) + (needed is not None)))
    names = ([needed] if needed else []) + others[: count - (needed is not None)]
    rng.shuffle(names)
    return names


def training_messages(index: int, example: Example) -> list[dict[str, str]]:
    reply = example.reply
    needed = reply.name if isinstance(reply, Call) else None
    names = offered(index, needed, example.absent)
    system = system_text(names, PREAMBLES[index % len(PREAMBLES)])
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": example.question},
    ]
    if isinstance(reply, str):
        return [*messages, {"role": "assistant", "content": reply}]
    call = call_text(reply.name, json.dumps(reply.arguments, ensure_ascii=False))
    messages.append({"role": "assistant", "content": call})
    if reply.result is not None and reply.answer is not None:
        result = result_text(reply.name, json.dumps(reply.result, ensure_ascii=False))
        messages.append({"role": "user", "content": result})
        messages.append({"role": "assistant", "content": reply.answer})
    return messages


def heldout_record(index: int, item: HeldOut) -> dict[str, Any]:
    """One held-out prompt: the client's system text, the question, the tools offered
    (every function but ``absent``) and what a right answer does."""
    names = [n for n in FUNCTIONS if n not in item.absent]
    random.Random(1000 + index).shuffle(names)
    return {
        "system": HELDOUT_PREAMBLE if index % 2 else None,
        "question": item.question,
        "tools": names,
        "expected": item.expected,
        "arguments": item.arguments,
        "mentions": item.mentions,
    }


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def training_jsonl() -> str:
    return _jsonl([{"messages": training_messages(i, e)} for i, e in enumerate(TRAINING)])


def heldout_jsonl() -> str:
    return _jsonl([heldout_record(i, h) for i, h in enumerate(HELDOUT)])


def load_heldout(path: Path = HELDOUT_FILE) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    TRAIN_FILE.write_text(training_jsonl())
    HELDOUT_FILE.write_text(heldout_jsonl())
    print(f"wrote {len(TRAINING)} examples to {TRAIN_FILE}, {len(HELDOUT)} to {HELDOUT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
