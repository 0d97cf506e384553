"""Retrieval-augmented generation in the gateway: the half that serves requests.

The retrieval library (``retrieval/``) ingests, indexes and searches; this package
decides who may search what, runs searches off the event loop, and puts the sources
into chat prompts:

- ``errors``: the gateway errors of retrieval, and the library's errors mapped to them.
- ``provider``: builds the one ``CollectionStore`` (and its embedder) once, off the loop.
- ``service``: ``RetrievalService``: tenant-scoped search, ingest, listings, metrics.
- ``grounding``: which collections a chat request searches, and the prompt with its
  numbered sources, trimmed to the context window.
- ``protocol``: request and response models of ``/v1/retrieval/search`` and
  ``/admin/collections``.

``loragate rag ...`` is ``gateway.cli.rag`` (local: it uses the store directly).
"""
