"""Tool calls on held-out prompts: the demo base model vs the ``toolcaller`` adapter.

Sends every held-out prompt of ``adapters/tooling/data/tools-heldout.jsonl`` (none of them in
the adapter's training data) to ``/v1/chat/completions`` with its tools, greedy, once
with ``tool_choice: "required"`` and once with ``"auto"``, to the base model and to the
adapter, and scores what comes back:

- schema-valid: the calls' arguments validate against the function's JSON Schema
  (with ``required`` the engine's grammar should make this 100%);
- right function: on the prompts a function fits, a call of that function;
- right arguments: ... with the expected values (IDs, cities, enums exactly, free text
  containing the expected word; strings case-blind);
- text when no function fits: on the other prompts, a plain-text answer (``auto``);
- tool-choice accuracy (``auto``): right function or rightly no call, over all prompts.

By default it starts ``loragate serve`` on loopback with the demo kit's base model and
its ``toolcaller`` adapter (``--adapter NAME=DIR``, repeatable: other adapter folders,
e.g. candidates trained with other settings, side by side); with ``--base-url`` (and
``--api-key``) it measures a running gateway, e.g. ``make demo`` (``--adapter NAME``).

    python -m loadtests.bench_tools [--adapter NAME=DIR ...] [--base-url URL --api-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from adapters.tooling.demo_kit import ensure_demo_kit
from loadtests.bench_responses import demo_base
from loadtests.bench_serving import MODEL_ID, free_port, start_gateway, wait_ready
from loadtests.tool_dataset import FUNCTIONS, load_heldout, tool_definitions

ADAPTER = "toolcaller"
CHOICES = ("required", "auto")


@dataclass(frozen=True)
class Outcome:
    """One answer, scored; ``expected`` None: no function fits the prompt."""

    model: str
    choice: str
    question: str
    expected: str | None
    called: str | None
    """The function called first (None: the answer was text)."""
    valid: bool
    """Every call's arguments validate against the function's schema."""
    right_arguments: bool
    finish_reason: str
    text: str
    seconds: float


def body(item: dict[str, Any], model: str, choice: str, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": item["question"]}]
    if item["system"]:
        messages.insert(0, {"role": "system", "content": item["system"]})
    return {
        "model": model,
        "messages": messages,
        "tools": tool_definitions(item["tools"]),
        "tool_choice": choice,
        "temperature": 0,
        "max_tokens": max_tokens,
    }


def score(
    item: dict[str, Any], model: str, choice: str, reply: dict[str, Any], s: float
) -> Outcome:
    choice_ = reply["choices"][0]
    message = choice_["message"]
    calls = message.get("tool_calls") or []
    valid, right = bool(calls), False
    for call in calls:
        name = call["function"]["name"]
        try:
            arguments = json.loads(call["function"]["arguments"])
        except ValueError:
            valid = False
            continue
        schema = FUNCTIONS[name]["parameters"]
        valid = valid and not list(Draft202012Validator(schema).iter_errors(arguments))
    if calls and calls[0]["function"]["name"] == item["expected"]:
        right = _right_arguments(item, calls[0]["function"]["arguments"])
    text = message.get("content") or json.dumps([c["function"] for c in calls], ensure_ascii=False)
    called = calls[0]["function"]["name"] if calls else None
    finish = str(choice_.get("finish_reason"))
    return Outcome(
        model, choice, item["question"], item["expected"], called, valid, right, finish, text, s
    )


def _right_arguments(item: dict[str, Any], raw: str) -> bool:
    try:
        arguments = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(arguments, dict):
        return False
    for key, value in item["arguments"].items():
        got = arguments.get(key)
        if not isinstance(got, str) or got.strip().casefold() != str(value).casefold():
            return False
    for key, word in item["mentions"].items():
        got = arguments.get(key)
        if not isinstance(got, str) or word.casefold() not in got.casefold():
            return False
    return True


async def run_all(
    url: str, api_key: str | None, models: list[str], args: argparse.Namespace
) -> list[Outcome]:
    items = load_heldout()[: args.limit]
    max_tokens = args.max_tokens
    jobs = [(m, c, item) for m in models for c in CHOICES for item in items]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limit = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=600, trust_env=False
    ) as client:

        async def one(model: str, choice: str, item: dict[str, Any]) -> Outcome:
            async with limit:
                started = time.monotonic()
                response = await client.post(
                    "/v1/chat/completions", json=body(item, model, choice, max_tokens)
                )
                response.raise_for_status()
                elapsed = time.monotonic() - started
                return score(item, model, choice, response.json(), elapsed)

        return list(await asyncio.gather(*(one(*job) for job in jobs)))


def table(outcomes: list[Outcome], models: list[str]) -> str:
    rows = [
        "| model | tool_choice | schema-valid calls | right function | right arguments "
        "| text when no function fits | tool-choice accuracy | cut at max_tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        for choice in CHOICES:
            mine = [o for o in outcomes if o.model == model and o.choice == choice]
            fits = [o for o in mine if o.expected is not None]
            unfit = [o for o in mine if o.expected is None]
            calls = [o for o in mine if o.called is not None]
            right_fn = sum(o.called == o.expected for o in fits)
            no_call = sum(o.called is None for o in unfit)
            cut = sum(o.finish_reason == "length" for o in mine)
            rows.append(
                f"| {model} | {choice} | {_rate(sum(o.valid for o in calls), len(calls))} "
                f"| {_rate(right_fn, len(fits))} "
                f"| {_rate(sum(o.right_arguments for o in fits), len(fits))} "
                + (
                    f"| {_rate(no_call, len(unfit))} | {_rate(right_fn + no_call, len(mine))} "
                    if choice == "auto"
                    else "| (a call is forced) | - "
                )
                + f"| {cut} |"
            )
    return "\n".join(rows)


def _rate(n: int, of: int) -> str:
    return f"{n}/{of} ({100 * n / of:.0f}%)" if of else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--base-url", help="a running gateway (default: start one here)")
    parser.add_argument("--api-key", default=os.environ.get("LORAGATE_API_KEY"))
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME[=DIR]",
        help=f"an adapter to measure (repeatable; default: the demo kit's {ADAPTER})",
    )
    parser.add_argument("--base-model", default=MODEL_ID, help="the base model's name")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--ready-timeout", type=float, default=900, help="seconds")
    parser.add_argument("--limit", type=int, help="only the first N prompts (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tools"))
    args = parser.parse_args()

    adapters = dict(a.partition("=")[::2] for a in args.adapter) or {ADAPTER: ""}
    models = [args.base_model, *adapters]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.base_url:
        outcomes = asyncio.run(run_all(args.base_url, args.api_key, models, args))
    else:
        outcomes = _with_local_gateway(args, adapters, models)
    wall = time.monotonic() - started
    (args.out / "outcomes.json").write_text(
        json.dumps([o.__dict__ for o in outcomes], indent=2, ensure_ascii=False) + "\n"
    )
    prompts = len(load_heldout()[: args.limit])
    print(
        f"\n{prompts} held-out prompts x {len(CHOICES)} tool_choice x {len(models)} models, "
        f"greedy, up to {args.max_tokens} tokens, {wall:.0f} s\n"
    )
    print(table(outcomes, models))
    return 0


def _with_local_gateway(
    args: argparse.Namespace, adapters: dict[str, str], models: list[str]
) -> list[Outcome]:
    """Serve the base model and ``adapters`` (name to folder; an empty folder: the
    kit's adapter of that name) here, and measure them."""
    if all(adapters.values()):  # the kit's base alone: no need to train the kit
        base, paths = demo_base(), {n: Path(p) for n, p in adapters.items()}
    else:
        kit = ensure_demo_kit()
        base = kit.base_dir
        paths = {n: Path(p) if p else kit.adapters[n] for n, p in adapters.items()}
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        log = args.out / "gateway.log"
        proc = start_gateway(base, paths, port, Path(tmp) / "gw", log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(f"{url}/ready", proc, args.ready_timeout, log=log)
            return asyncio.run(run_all(url, None, models, args))
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(60)


if __name__ == "__main__":
    raise SystemExit(main())
