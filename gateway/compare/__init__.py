"""``loragate compare``: measure which mix of prompt, retrieval and LoRA adapter a use
case needs, by running one eval set through several variants on a running gateway.

A client of the gateway's HTTP API only (the OpenAI SDK plus the retrieval search
endpoint): it imports nothing of the gateway's internals, so it runs against any
loragate (or, without RAG, any OpenAI-compatible server).

Modules: ``eval_set`` (JSONL schema, loading), ``variants`` (YAML schema), ``results``
(the resumable answers file), ``runner`` (requests), ``scoring`` (one answer's marks),
``metrics`` (per variant / language), ``stats`` (paired bootstrap), ``report``
(Markdown, JSON, sentences), ``plots`` (PNG). The command is ``gateway.cli.compare``.
``gate`` is the evaluation gate of ``loragate adapters promote`` (``gateway.cli.promote``):
one score per item and version, and the paired interval that decides.
"""
