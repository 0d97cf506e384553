"""``RevisionWatcher``: a daemon thread that calls ``refresh()`` every few tenths of a second.

A registry whose document lives in a shared store (several gateways) must notice what
the others write. Doing the check on the request path would put a database round trip
(or, with the database down, a connect timeout) inside ``resolve``; this thread does it
instead, so ``resolve`` never does I/O and sees changes at most ``interval`` plus one
query late.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from adapters.errors import AdapterError

logger = logging.getLogger(__name__)


class RevisionWatcher:
    """Calls ``refresh`` every ``interval`` seconds until ``stop()``; failures are logged
    once per outage and never stop the thread (the last state read stays in use).

    Concurrency rule: ``refresh`` runs on the watcher's own thread and must be
    thread-safe; ``stop`` may be called from any thread, more than once.
    """

    def __init__(self, refresh: Callable[[], object], interval: float, name: str) -> None:
        self._refresh = refresh
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stopped.wait(self._interval):
            try:
                self._refresh()
            except AdapterError as exc:
                if not failing:
                    logger.warning("registry refresh failed (serving the last state): %s", exc)
                failing = True
            except Exception:
                logger.exception("registry refresh failed")
                failing = True
            else:
                if failing:
                    logger.info("registry refresh works again")
                failing = False

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
