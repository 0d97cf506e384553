"""The admin API (``/admin/...``) and its command-line client.

- ``auth``: the admin credential check (401 / 403).
- ``protocol``: request and response models of ``/admin/adapters``.
- ``routes``: the ``/admin/adapters`` router.
- ``collection_routes``: the ``/admin/collections`` router (retrieval documents), and
  ``upload_limit``, the body limit that leaves its uploads to it.
- ``client`` and ``commands``: ``loragate adapters ...`` over HTTP.
- ``tenant_routes`` and ``tenant_protocol``: ``/admin/tenants`` (tenants and their keys)
  and ``/admin/audit``; ``tenant_commands``: ``loragate keys|tenants|audit`` over HTTP.
"""
