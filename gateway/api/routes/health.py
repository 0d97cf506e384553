from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import EngineDep, StateDep

router = APIRouter()


@router.get("/health")
async def health(state: StateDep) -> dict[str, str]:
    """The process can still serve (liveness probe): 503 with an error body once the
    in-process engine has died, which only a restart cures. With ``engine.kind: remote``
    the replicas have their own probes: none healthy is ``/ready``'s 503, and restarting
    the gateway would not bring one back."""
    if state.settings.engine.kind == "vllm":
        await state.engine.check_health()
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: StateDep, engine: EngineDep) -> dict[str, str]:
    """The engine can serve now (readiness probe); 503 with an error body otherwise,
    and from the moment a drain begins (SIGTERM), so load balancers stop sending."""
    state.pipeline.drain.refuse_if_draining()
    await engine.check_health()
    return {"status": "ready"}
