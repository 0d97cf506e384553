"""The ``loragate`` command line.

- ``main``: the entry point (``loragate serve|demo|config|...``) and its parser.
- ``admin`` and ``admin_client``: ``loragate adapters ...`` over the admin HTTP API.
- ``tenants``: ``loragate keys|tenants|audit`` over the admin HTTP API.
- ``rag``: ``loragate rag ...`` (local: uses the retrieval store directly).
- ``compare``: ``loragate compare ...`` (an HTTP API client of a running gateway).
"""
