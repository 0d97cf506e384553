"""Parse a server-sent-events body into JSON payloads (and the [DONE] marker)."""

from __future__ import annotations

import json
from typing import Any


def parse_sse(body: str) -> list[Any]:
    events: list[Any] = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), f"not an SSE data line: {block!r}"
        data = block[len("data: ") :]
        events.append("[DONE]" if data == "[DONE]" else json.loads(data))
    return events
