"""``engine.kind: remote``: the ``Engine`` protocol over vLLM OpenAI servers (replicas).

    client      ReplicaClient: HTTP calls to one replica, each with a deadline
    completions the GenerationRequest -> /v1/completions body, SSE events -> outputs
    placement   rendezvous hashing with bounded load (which replica serves a request)
    replicas    Replica (in-flight counts, adapter record) and ReplicaPool (membership,
                DNS, health probes, restart detection)
    engine      RemoteEngine: generate with one retry before the first token, adapters
    startup     build it from RemoteEngineSettings; learn the base model from a replica

The gateway keeps tokenizing and rendering prompts; replicas get token-id prompts.
"""

from gateway.engine.remote.engine import RemoteEngine

__all__ = ["RemoteEngine"]
