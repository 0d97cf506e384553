"""``/playground``: a single-page UI served by the gateway itself.

Static files in ``static/`` (package data; no CDN, no build step) call the public API
from the browser: ``/v1/models``, ``/v1/chat/completions`` (streamed), the retrieval
search, and ``/admin/adapters`` with an admin key.
"""
