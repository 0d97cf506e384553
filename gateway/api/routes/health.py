from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import EngineDep

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (liveness probe)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(engine: EngineDep) -> dict[str, str]:
    """The engine can serve (readiness probe); 503 with an error body otherwise."""
    await engine.check_health()
    return {"status": "ready"}
