"""``start_engine``: the configured engine kind, started."""

from __future__ import annotations

from gateway.engine.interface import Engine
from gateway.extras import ENGINE, require
from gateway.settings import EngineSettings, ModelSettings


def start_engine(model: ModelSettings, engine: EngineSettings) -> Engine:
    """Start the engine ``engine.kind`` names (blocking: the caller runs it at start-up).
    Raises ``MissingExtraError`` for the in-process engine when vLLM is not installed."""
    if engine.kind == "vllm":
        require(ENGINE)  # vLLM (and torch) come with the cpu or gpu extra
        from gateway.engine.vllm_engine import VLLMEngine

        return VLLMEngine.start(model, engine)
    if engine.kind == "remote":
        from gateway.engine.remote.startup import start_remote_engine

        return start_remote_engine(model, engine)
    raise ValueError(f"unknown engine kind {engine.kind!r}")  # pragma: no cover - validated
