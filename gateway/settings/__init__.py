"""Gateway settings: one pydantic-settings class (``Settings``), read from a YAML file
and ``LORAGATE_*``, one module per section with the types it needs beside it.

- ``settings``: ``Settings``, every section together, and ``Settings.load``.
- ``model``: ``model`` and ``adapters``; ``engine``: ``engine`` (in-process vLLM or
  remote replicas, their shared ``LoraCapacity``); ``vllm_args``: ``engine.extra_args``
  checked against vLLM's own argument definitions.
- ``registry``; ``adapter_cache`` (tenants' adapters fetched on first request);
  ``server`` (also ``admin`` and ``metrics``), ``limits`` (also
  ``admission`` and ``limits_store``), ``stores`` (``shared_store``, ``responses``),
  ``rag`` (``retrieval``), ``tracing``.
- ``tenancy``: tenants, keys, aliases, policies, prompts and pricing (the part a reload
  may change); ``keys``: the API key format and its hashes.
- ``section``: what every section shares; ``loading``: reading the file, reporting errors.

This package imports nothing else of the gateway: every other part may import it.
"""

from gateway.settings.adapter_cache import AdapterCacheSettings
from gateway.settings.engine import (
    ENGINE_KINDS,
    VLLM_LORA_RANKS,
    EngineSettings,
    LoraCapacity,
    RemoteEngineSettings,
    ReplicaSettings,
    VLLMEngineSettings,
)
from gateway.settings.limits import (
    DEFAULT_ENGINE_SEQS,
    AdmissionSettings,
    LimitSettings,
    LimitStoreSettings,
)
from gateway.settings.loading import (
    ConfigFileError,
    config_error_lines,
    describe,
    read_config_file,
)
from gateway.settings.model import ADAPTER_NAME, AdapterSettings, ModelSettings
from gateway.settings.rag import RetrievalSettings
from gateway.settings.registry import DEFAULT_URI_PROTOCOLS, MIB, RegistrySettings
from gateway.settings.section import Section, check_api_key_source, read_api_key
from gateway.settings.server import (
    MIN_ADMIN_KEY_LENGTH,
    AdminSettings,
    MetricsSettings,
    ServerSettings,
    is_loopback_host,
)
from gateway.settings.settings import Settings
from gateway.settings.stores import ResponsesSettings, SharedStoreSettings
from gateway.settings.tracing import TracingSettings

__all__ = [
    "ADAPTER_NAME",
    "DEFAULT_ENGINE_SEQS",
    "DEFAULT_URI_PROTOCOLS",
    "ENGINE_KINDS",
    "MIB",
    "MIN_ADMIN_KEY_LENGTH",
    "VLLM_LORA_RANKS",
    "AdapterCacheSettings",
    "AdapterSettings",
    "AdminSettings",
    "AdmissionSettings",
    "ConfigFileError",
    "EngineSettings",
    "LimitSettings",
    "LimitStoreSettings",
    "LoraCapacity",
    "MetricsSettings",
    "ModelSettings",
    "RegistrySettings",
    "RemoteEngineSettings",
    "ReplicaSettings",
    "ResponsesSettings",
    "RetrievalSettings",
    "Section",
    "ServerSettings",
    "Settings",
    "SharedStoreSettings",
    "TracingSettings",
    "VLLMEngineSettings",
    "check_api_key_source",
    "config_error_lines",
    "describe",
    "is_loopback_host",
    "read_api_key",
    "read_config_file",
]
