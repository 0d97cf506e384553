"""The admin API (``/admin/...``); its command-line client is ``gateway.cli.admin``.

- ``auth``: the admin credential check (401 / 403).
- ``protocol``: request and response models of ``/admin/adapters``.
- ``routes``: the ``/admin/adapters`` router.
- ``collection_routes``: the ``/admin/collections`` router (retrieval documents), and
  ``upload_limit``, the body limit that leaves its uploads to it.
- ``tenant_routes`` and ``tenant_protocol``: ``/admin/tenants`` (tenants and their keys)
  and ``/admin/audit``.
"""
