"""``ShadowLog``: both answers of shadowed requests, for tenants that opted in.

Kept in memory, per tenant, bounded by entries and by bytes of answer text (the oldest
entries go first). In memory on purpose: the entries hold user-facing text, so they are
never written to disk, never in a backup, and gone with the process; a comparison needs
the recent answers, not a history. Each gateway holds its own requests' entries.

Concurrency rule: event loop only (no locks; every change is synchronous).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

MAX_ENTRIES = 200
"""Entries kept per tenant."""
MAX_BYTES = 1 << 20
"""Bytes of answer text (UTF-8, both sides) kept per tenant."""


class ShadowAnswer(BaseModel):
    """One side of a shadowed request."""

    version: str
    text: list[str] = Field(description="Each choice's text.")
    completion_tokens: int
    seconds: float = Field(description="From the engine's start to the last token.")
    error: str | None = Field(default=None, description="Why the shadow failed (null: it ran).")


class ShadowEntry(BaseModel):
    """A shadowed request: what the caller got (``stable``) and what the candidate said."""

    id: int
    created: int
    request_id: str
    tenant: str
    adapter: str
    stable: ShadowAnswer
    shadow: ShadowAnswer

    def size(self) -> int:
        texts = self.stable.text + self.shadow.text
        return sum(len(t.encode()) for t in texts)


@dataclass
class _TenantEntries:
    entries: deque[ShadowEntry] = field(default_factory=deque)
    bytes: int = 0


class ShadowLog:
    """Per tenant, at most ``max_entries`` entries and ``max_bytes`` of answer text."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._ids = itertools.count(1)
        self._tenants: dict[str, _TenantEntries] = {}
        self.dropped = 0
        """Entries dropped to stay within the bounds (an entry larger than the byte
        bound alone is dropped at once)."""

    def add(
        self, tenant: str, adapter: str, request_id: str, stable: ShadowAnswer, shadow: ShadowAnswer
    ) -> ShadowEntry:
        entry = ShadowEntry(
            id=next(self._ids),
            created=int(self._clock()),
            request_id=request_id,
            tenant=tenant,
            adapter=adapter,
            stable=stable,
            shadow=shadow,
        )
        held = self._tenants.setdefault(tenant, _TenantEntries())
        held.entries.append(entry)
        held.bytes += entry.size()
        while held.entries and (
            len(held.entries) > self.max_entries or held.bytes > self.max_bytes
        ):
            held.bytes -= held.entries.popleft().size()
            self.dropped += 1
        return entry

    def page(
        self, adapter: str, *, tenant: str | None = None, after: int = 0, limit: int = 20
    ) -> tuple[list[ShadowEntry], bool]:
        """Entries of ``adapter`` (one tenant's, or every tenant's) with ids above
        ``after``, oldest first, at most ``limit``; and whether more follow."""
        found = sorted(
            (e for e in self._entries(tenant) if e.adapter == adapter and e.id > after),
            key=lambda e: e.id,
        )
        return found[:limit], len(found) > limit

    def _entries(self, tenant: str | None) -> Iterator[ShadowEntry]:
        if tenant is not None:
            held = self._tenants.get(tenant)
            yield from held.entries if held is not None else ()
            return
        for held in self._tenants.values():
            yield from held.entries
