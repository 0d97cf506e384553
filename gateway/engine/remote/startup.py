"""Building a ``RemoteEngine`` from ``RemoteEngineSettings`` and learning the base model."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx

from gateway.engine.remote.client import Deadlines, ReplicaClient, ReplicaError
from gateway.engine.remote.engine import RemoteEngine
from gateway.engine.remote.placement import BoundedLoad, Placement, RoundRobin
from gateway.engine.remote.replicas import DnsTarget, ReplicaPool, Resolver, resolve_addresses
from gateway.errors import EngineUnavailableError
from gateway.settings import ModelSettings, RemoteEngineSettings


def start_remote_engine(
    model: ModelSettings,
    settings: RemoteEngineSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver = resolve_addresses,
) -> RemoteEngine:
    """Blocking (the factory's contract, called from the server's loop): learns the base
    model's id and context length from a replica unless configured, in a worker thread
    with its own loop and clients, then builds the engine for the caller's loop.

    ``model`` is the gateway's copy of the base model (it tokenizes); the replicas
    must serve the same weights.
    """
    found: list[Any] = []

    def discover_in_thread() -> None:
        async def run() -> tuple[tuple[str, int], list[str]]:
            probe = build_remote_engine(settings, transport=transport, resolver=resolver)
            try:
                base = await discover_base(probe, settings)
                return base, [r.url for r in probe.pool.healthy()]
            finally:
                await probe.pool.aclose()

        try:
            found.append(asyncio.run(run()))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            found.append(exc)

    thread = threading.Thread(target=discover_in_thread, name="remote-engine-discovery")
    thread.start()
    thread.join()
    if isinstance(found[0], BaseException):
        raise found[0]
    base, healthy = found[0]
    engine = build_remote_engine(settings, transport=transport, resolver=resolver, base=base)
    for url in healthy:  # as just probed: serve before the monitor's first round
        if url in engine.pool.replicas:
            engine.pool.replicas[url].healthy = True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return engine  # the monitor starts with the first call made on a loop
    engine.ensure_monitor()
    return engine


def build_remote_engine(
    settings: RemoteEngineSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver = resolve_addresses,
    base: tuple[str, int] | None = None,
) -> RemoteEngine:
    """The engine, not yet probed (``discover_base`` fills in what ``base`` leaves out)."""
    deadlines = Deadlines(
        connect=settings.connect_timeout,
        first_event=settings.first_token_timeout,
        between_events=settings.read_timeout,
        request=settings.request_timeout,
        admin=settings.admin_timeout,
        health=settings.health_timeout,
    )
    default_key = settings.api_key()
    keys = {r.url: r.api_key(default_key) for r in settings.replicas}

    def make_client(url: str) -> ReplicaClient:
        key = keys.get(url, default_key)
        return ReplicaClient(url, api_key=key, deadlines=deadlines, transport=transport)

    dns = None
    if settings.dns_name is not None:
        dns = DnsTarget(settings.dns_name, settings.port, settings.scheme)
    pool = ReplicaPool(
        make_client,
        [r.url for r in settings.replicas],
        dns=dns,
        resolver=resolver,
        interval=settings.health_interval,
        dns_refresh=settings.dns_refresh_seconds,
    )
    name, length = base or (settings.served_model_name or "", settings.max_model_len or 0)
    return RemoteEngine(
        pool,
        base_model=name,
        max_model_len=length,
        placement=placement_for(settings),
    )


def placement_for(settings: RemoteEngineSettings) -> Placement:
    if settings.placement == "round_robin":
        return RoundRobin()
    return BoundedLoad(
        settings.max_replicas_per_adapter,
        settings.spill_threshold,
        settings.balance_factor,
        settings.balance_floor,
    )


MAX_MODEL_LEN = 1 << 24
"""The longest context a replica may report (16M tokens)."""


async def discover_base(engine: RemoteEngine, settings: RemoteEngineSettings) -> tuple[str, int]:
    """Probe every replica; take the base model's id and ``max_model_len`` from the
    first healthy one's /v1/models where the settings leave them out."""
    await engine.pool.refresh()
    if settings.served_model_name is not None and settings.max_model_len is not None:
        engine.base_model, engine.max_model_len = settings.served_model_name, settings.max_model_len
        return engine.base_model, engine.max_model_len
    for replica in engine.pool.healthy():
        try:
            models = await replica.client.models()
        except ReplicaError:
            continue
        base = next((m for m in models if not m.get("parent")), None)
        if base is None:
            continue
        # A replica's answer, checked: a name, and a length no model has exceeded.
        name = settings.served_model_name or base.get("id")
        length = settings.max_model_len or base.get("max_model_len")
        if not isinstance(name, str) or not name or type(length) is not int:
            continue
        if settings.max_model_len is None and not 0 < length <= MAX_MODEL_LEN:
            continue
        engine.base_model, engine.max_model_len = name, length
        return engine.base_model, engine.max_model_len
    raise EngineUnavailableError(
        "No replica answered /v1/models with the base model; start one, or set "
        "engine.served_model_name and engine.max_model_len to start without it."
    )
