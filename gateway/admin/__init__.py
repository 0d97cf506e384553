"""The admin API (``/admin/...``) and its command-line client.

- ``auth``: the admin credential check (401 / 403).
- ``protocol``: request and response models of ``/admin/adapters``.
- ``routes``: the ``/admin/adapters`` router.
- ``client`` and ``commands``: ``loragate adapters ...`` over HTTP.
"""
