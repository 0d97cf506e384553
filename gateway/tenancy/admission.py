"""``InFlightLimiter``: a per-tenant cap on concurrent requests (fair engine share)."""

from __future__ import annotations

from collections import Counter


class InFlightLimiter:
    """Counts requests in flight per tenant.

    Concurrency rule: used only from the server's event loop (no awaits between the
    check and the increment), so it needs no lock.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def try_enter(self, tenant: str, cap: int | None) -> bool:
        if cap is not None and self._counts[tenant] >= cap:
            return False
        self._counts[tenant] += 1
        return True

    def leave(self, tenant: str) -> None:
        self._counts[tenant] -= 1
        if self._counts[tenant] <= 0:
            del self._counts[tenant]
