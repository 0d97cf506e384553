"""Helpers that both the adapter registry and the gateway use.

- ``pg_connection``: one PostgreSQL connection, its retries and its redacted errors.
- ``credential_redaction``: credentials cut out of URLs and messages before they are logged.
- ``atomic_dir``: folders that appear whole or not at all (written beside, then renamed).
"""
