"""``Replica`` (one vLLM server as the gateway sees it) and ``ReplicaPool`` (all of them)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gateway.engine.interface import AdapterRef
from gateway.engine.remote.client import (
    ReplicaClient,
    ReplicaError,
    ReplicaRejectedError,
    excerpt,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterRecord:
    """A name registered on a replica. ``ref`` is None for a name found there that this
    gateway did not load (another gateway did, or this one before it restarted);
    ``root`` is then the path the replica says it loaded that name from."""

    ref: AdapterRef | None
    since: float
    root: str | None = None


def adapter_roots(models: list[dict[str, Any]]) -> dict[str, str | None]:
    """The adapters in a /v1/models answer (vLLM lists them with a ``parent``) and the
    path each was loaded from (``root``; None when missing)."""
    return {
        m["id"]: m["root"] if isinstance(m.get("root"), str) else None
        for m in models
        if m.get("parent") and isinstance(m.get("id"), str)
    }


def _other_weights(replica: str, name: str, root: str | None) -> ReplicaRejectedError:
    """A name the replica holds from another path than the registry's copy: whoever
    can call the replica put it there, and the gateway neither serves nor replaces it."""
    logger.warning(
        "replica %s holds %s from %s, not from the registry's copy: refused",
        replica,
        name,
        excerpt(root or "an unknown path"),
    )
    return ReplicaRejectedError(409, f"{name} is registered there with other weights")


class Replica:
    """One replica: health, requests in flight, and the adapters registered on it.

    ``adapters`` is this gateway's record, least recently used first; health probes
    check it against the replica's /v1/models. Concurrency rule: event loop only; one
    load per adapter name at a time (concurrent requests share it).
    """

    def __init__(self, url: str, client: ReplicaClient, *, from_dns: bool = False) -> None:
        self.url = url
        self.client = client
        self.from_dns = from_dns
        self.healthy = False
        self.last_error: str | None = None
        self.in_flight = 0
        self.requests = 0
        """Requests sent here (a retry counts on each replica it tried)."""
        self.adapter_in_flight: Counter[str] = Counter()
        self.adapters: OrderedDict[str, AdapterRecord] = OrderedDict()
        self.loads = 0
        """Adapter loads this gateway made here (a restart's reloads included)."""
        self._loading: dict[str, asyncio.Future[bool]] = {}

    @contextmanager
    def busy(self, adapter: str | None) -> Iterator[None]:
        """Count a request in flight here (for placement and figures) while inside."""
        self.in_flight += 1
        self.requests += 1
        if adapter is not None:
            self.adapter_in_flight[adapter] += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if adapter is not None:
                self.adapter_in_flight[adapter] -= 1
                if self.adapter_in_flight[adapter] <= 0:
                    del self.adapter_in_flight[adapter]

    async def ensure_adapter(self, ref: AdapterRef) -> bool:
        """Register ``ref`` here unless it is; True when this call loaded it."""
        name = ref.engine_name
        record = self.adapters.get(name)
        if record is not None:
            if record.ref is None:  # found here: adopted only if it is the same copy
                if record.root != ref.path:
                    raise _other_weights(self.url, name, record.root)
                self.adapters[name] = AdapterRecord(ref, record.since)
            self.adapters.move_to_end(name)
            return False
        future = self._loading.get(name)
        if future is None:
            future = asyncio.ensure_future(self._load(ref))
            self._loading[name] = future

            def done(f: asyncio.Future[bool]) -> None:
                self._loading.pop(name, None)
                if not f.cancelled():
                    f.exception()  # retrieved: waiters re-raise it, none may be left

            future.add_done_callback(done)
        # A waiter that gives up (client gone) leaves the load running for the others.
        return await asyncio.shield(future)

    async def _load(self, ref: AdapterRef) -> bool:
        name = ref.engine_name
        started = asyncio.get_running_loop().time()
        try:
            await self.client.load_adapter(name, ref.path)
        except ReplicaRejectedError:
            # vLLM refuses a name it has: another gateway (or this one before a restart)
            # loaded it, from the registry's copy, or someone else did, from any path.
            # The replica's own list decides; never reload it in place.
            roots = adapter_roots(await self.client.models())
            if name not in roots:
                raise
            if roots[name] != ref.path:
                raise _other_weights(self.url, name, roots[name]) from None
            self.adapters[name] = AdapterRecord(ref, started)
            return False
        self.adapters[name] = AdapterRecord(ref, started)
        self.loads += 1
        return True

    def forget(self, name: str) -> None:
        self.adapters.pop(name, None)

    def reconcile(self, present: dict[str, str | None], probe_started: float) -> list[str]:
        """Match the record to the adapters the replica lists (name: path); return the
        names it lost.

        Names loaded after the probe began are kept (the answer predates them). Names
        the replica has that the record lacks are recorded as found (no ``ref``), least
        recently used: ``ensure_adapter`` adopts one only if its path is the registry's
        copy. A name of ours now listed from another path was replaced behind the
        gateway's back: it becomes a found name too (and is refused).
        """
        lost = [n for n, r in self.adapters.items() if n not in present and r.since < probe_started]
        for name in lost:
            del self.adapters[name]
        for name, record in list(self.adapters.items()):
            root = present.get(name)
            if record.ref is not None and root is not None and root != record.ref.path:
                logger.warning("replica %s now holds %s from another path", self.url, name)
                self.adapters[name] = AdapterRecord(None, probe_started, root)
        for name in sorted(set(present) - set(self.adapters)):
            self.adapters[name] = AdapterRecord(None, probe_started, present[name])
            self.adapters.move_to_end(name, last=False)
        return lost


@dataclass(frozen=True)
class DnsTarget:
    name: str
    port: int
    scheme: str = "http"


Resolver = Callable[[str, int], Awaitable[list[str]]]
ProbeHook = Callable[[Replica, list[str]], Awaitable[None]]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now (a headless Service: one per pod)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def address_url(scheme: str, address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}"


class ReplicaPool:
    """The replicas by URL: the configured ones plus those a DNS name resolves to.

    ``run`` is the background task: every ``interval`` seconds it re-resolves the DNS
    name (when due) and probes every replica (/health, then /v1/models). A failed probe
    ejects the replica, a good one admits it again. A replica whose /v1/models lacks
    adapters recorded there lost them (it restarted): the record drops them, so they
    load again on demand, and ``on_probe`` hears which. Concurrency rule: event loop only.
    """

    def __init__(
        self,
        make_client: Callable[[str], ReplicaClient],
        urls: list[str],
        *,
        dns: DnsTarget | None = None,
        resolver: Resolver = resolve_addresses,
        interval: float = 5.0,
        dns_refresh: float = 10.0,
        on_probe: ProbeHook | None = None,
    ) -> None:
        self._make_client = make_client
        self.replicas: dict[str, Replica] = {u: Replica(u, make_client(u)) for u in urls}
        self._dns = dns
        self._resolver = resolver
        self.interval = interval
        self._dns_refresh = dns_refresh
        self._dns_due = 0.0
        self.on_probe = on_probe
        self.probed = False
        self._leaving: list[Replica] = []

    def healthy(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.healthy]

    def eject(self, replica: Replica, reason: str) -> None:
        if replica.healthy:
            logger.warning("replica %s ejected: %s", replica.url, reason)
        replica.healthy = False
        replica.last_error = reason

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # never let the monitor die
                logger.exception("replica health check failed")
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """One round: membership (DNS, when due), then a probe of every replica."""
        loop = asyncio.get_running_loop()
        if self._dns is not None and loop.time() >= self._dns_due:
            self._dns_due = loop.time() + self._dns_refresh
            await self._resolve_members(self._dns)
        await asyncio.gather(*(self.probe(r) for r in list(self.replicas.values())))
        self.probed = True
        for replica in [r for r in self._leaving if r.in_flight == 0]:
            self._leaving.remove(replica)
            await replica.client.aclose()

    async def _resolve_members(self, dns: DnsTarget) -> None:
        try:
            addresses = await self._resolver(dns.name, dns.port)
        except OSError as exc:  # keep the last members: a DNS hiccup is no outage
            logger.warning("could not resolve %s: %s", dns.name, exc)
            return
        wanted = {address_url(dns.scheme, a, dns.port) for a in addresses}
        for url in sorted(wanted - set(self.replicas)):
            logger.info("replica %s joined (%s)", url, dns.name)
            self.replicas[url] = Replica(url, self._make_client(url), from_dns=True)
        for url, replica in list(self.replicas.items()):
            if replica.from_dns and url not in wanted:
                logger.info("replica %s left (%s)", url, dns.name)
                del self.replicas[url]
                self._leaving.append(replica)  # closed once its requests end

    async def probe(self, replica: Replica) -> None:
        started = asyncio.get_running_loop().time()
        try:
            await replica.client.health()
            models = await replica.client.models(seconds=replica.client.deadlines.health)
        except ReplicaError as exc:
            self.eject(replica, str(exc) or type(exc).__name__)
            return
        lost = replica.reconcile(adapter_roots(models), started)
        if lost:
            logger.warning(
                "replica %s no longer has %s (restarted?): they load again on demand",
                replica.url,
                ", ".join(lost),
            )
        if not replica.healthy:
            logger.info("replica %s is healthy", replica.url)
        replica.healthy = True
        replica.last_error = None
        if self.on_probe is not None:
            await self.on_probe(replica, lost)

    async def aclose(self) -> None:
        for replica in [*self.replicas.values(), *self._leaving]:
            await replica.client.aclose()
