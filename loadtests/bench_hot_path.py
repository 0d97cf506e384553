"""The per-request hot paths in process, this tree against another revision: the SSE
response (``gateway.api.event_stream``) and the fair queue (``gateway.pipeline.fair_queue``).

    python -m loadtests.bench_hot_path --before <revision> [--rounds 11]

The two modules of ``--before`` are read with ``git show`` and loaded beside this tree's
own, then both run the same work, rounds interleaved (the order flips every round), so
load from other programs falls on both alike; the table gives each side's median and
their ratio. No server and no sockets: only these modules' own cost.

- stream: ``EventStreamResponse`` sends 400 responses of 64 small events each (an
  instant producer that yields to the loop every fourth event; ``send`` returns at
  once): microseconds per event.
- queue: 4000 requests of 6 tenants (weights 1-3) through ``FairQueue.slot`` with 8
  slots, all at once: microseconds per request, waiting and dispatch included.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway.api import event_stream
from gateway.metrics import GatewayMetrics
from gateway.pipeline import fair_queue

EVENT = 'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"w "}}]}\n\n'
ROOT = Path(__file__).resolve().parent.parent


def module_at(revision: str, path: str, folder: Path) -> ModuleType:
    """The module at ``path`` as of ``revision``, loaded under a name of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    name = "before_" + Path(path).stem
    file = folder / f"{name}.py"
    file.write_bytes(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def stream(response_class: Any, requests: int = 400, events: int = 64) -> float:
    """Microseconds per event sent."""
    never = asyncio.get_running_loop().create_future()

    async def receive() -> Any:
        return await never  # the client never leaves

    async def send(message: Any) -> None:
        pass

    async def produce() -> AsyncIterator[str]:
        for i in range(events):
            if i % 4 == 0:
                await asyncio.sleep(0)
            yield EVENT

    started = time.perf_counter()
    for _ in range(requests):
        await response_class(produce())({"type": "http"}, receive, send)
    return (time.perf_counter() - started) / (requests * events) * 1e6


async def queue(module: Any, requests: int = 4000, tenants: int = 6, slots: int = 8) -> float:
    """Microseconds per request through ``slot``."""
    fair = module.FairQueue(slots, 10 * requests, 60.0, GatewayMetrics())

    async def one(i: int) -> None:
        async with fair.slot(f"t{i % tenants}", 1.0 + i % 3, 1):
            await asyncio.sleep(0)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    return (time.perf_counter() - started) / requests * 1e6


async def measure(before: dict[str, ModuleType], rounds: int) -> dict[str, list[float]]:
    runs: dict[str, Callable[[], Coroutine[Any, Any, float]]] = {
        "stream before": lambda: stream(before["stream"].EventStreamResponse),
        "stream now": lambda: stream(event_stream.EventStreamResponse),
        "queue before": lambda: queue(before["queue"]),
        "queue now": lambda: queue(fair_queue),
    }
    figures: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            figures[name].append(await runs[name]())
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        before = {
            "stream": module_at(args.before, "gateway/api/event_stream.py", Path(folder)),
            "queue": module_at(args.before, "gateway/pipeline/fair_queue.py", Path(folder)),
        }
        figures = asyncio.run(measure(before, args.rounds))
    median = {name: statistics.median(values) for name, values in figures.items()}
    print(f"| path | {args.before} | this tree | this tree / {args.before} |")
    print("| --- | ---: | ---: | ---: |")
    for path, unit in (("stream", "us per event"), ("queue", "us per request")):
        old, new = median[f"{path} before"], median[f"{path} now"]
        print(f"| {path} ({unit}) | {old:.2f} | {new:.2f} | {new / old:.3f} |")
    print(f"\nmedians of {args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
